// indepgen: an independent HTTP load generator for kattila-receiver,
// written from docs/protocol.md (wire protocol version 1) alone.
//
// Closed loop: -concurrency goroutines each take an idle simulated agent,
// build and sign its next report, POST it to URL+"/status/updates", wait for
// the answer, hand the agent back and take the next one.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ---------------------------------------------------------------- wire types

type System struct {
	UptimeSecs uint64     `json:"uptime_secs"`
	Load       [3]float64 `json:"load"`
	Kernel     string     `json:"kernel"`
}

type Iface struct {
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	State     string   `json:"state"`
	MTU       uint32   `json:"mtu"`
	MAC       string   `json:"mac,omitempty"`
	Addresses []string `json:"addresses"`
	RxBytes   uint64   `json:"rx_bytes"`
	TxBytes   uint64   `json:"tx_bytes"`
	RxErrors  uint64   `json:"rx_errors"`
	TxErrors  uint64   `json:"tx_errors"`
}

type Route struct {
	Dst     string `json:"dst"`
	Gateway string `json:"gateway,omitempty"`
	Dev     string `json:"dev,omitempty"`
	Metric  uint32 `json:"metric,omitempty"`
	Table   uint32 `json:"table"`
}

type Peer struct {
	PublicKey           string   `json:"public_key"`
	Endpoint            string   `json:"endpoint,omitempty"`
	AllowedIPs          []string `json:"allowed_ips"`
	LatestHandshake     int64    `json:"latest_handshake"`
	RxBytes             uint64   `json:"rx_bytes"`
	TxBytes             uint64   `json:"tx_bytes"`
	PersistentKeepalive uint16   `json:"persistent_keepalive,omitempty"`
}

type WGDevice struct {
	Name       string `json:"name"`
	PublicKey  string `json:"public_key"`
	ListenPort uint16 `json:"listen_port,omitempty"`
	Peers      []Peer `json:"peers"`
}

type Report struct {
	Kind         string     `json:"kind"`
	AgentID      string     `json:"agent_id"`
	Timestamp    int64      `json:"timestamp"`
	Nonce        string     `json:"nonce"`
	Tick         uint64     `json:"tick"`
	ObservedAt   int64      `json:"observed_at"`
	Hostname     string     `json:"hostname"`
	AgentVersion string     `json:"agent_version"`
	Site         string     `json:"site,omitempty"`
	System       System     `json:"system"`
	Interfaces   []Iface    `json:"interfaces"`
	Routes       []Route    `json:"routes"`
	Wireguard    []WGDevice `json:"wireguard"`
}

// ---------------------------------------------------------------- agents

type peerState struct {
	target   int    // index of the peer agent in the fleet
	phase    uint64 // re-handshake phase 0..3
	endpoint string
	rxRate   uint64 // bytes per 30 s report
	txRate   uint64
}

type ifaceRate struct{ rx, tx uint64 }

type agent struct {
	idx      int
	id       string
	hostname string
	site     int
	pubKey   string
	wgAddr   string // "10.a.b.c"
	pubAddr  string // "198.51.100.x:port"
	changer  bool   // one of the ~10% of agents that change now and then
	rng      *mrand.Rand
	tick     uint64
	uptime   uint64
	load     [3]float64
	report   Report // kept between reports: counters and handshakes live here
	peers    []peerState
	rates    []ifaceRate
	extraUp  bool // the optional veth interface is present
	extraIf  Iface
	nReports uint64
}

var docNets = []string{"198.51.100", "203.0.113", "192.0.2"}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func randKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b) // 44 chars, ends in '='
}

func wgAddrOf(i int) string {
	n := i + 1
	return fmt.Sprintf("10.%d.%d.%d", (n>>16)&255, (n>>8)&255, n&255)
}

func pubAddrOf(i int) string {
	host := i%254 + 1
	net := docNets[(i/254)%len(docNets)]
	port := 51820 + i/(254*len(docNets))
	return fmt.Sprintf("%s.%d:%d", net, host, port)
}

const nSites = 50

// buildFleet creates all agents; peers are chosen once the keys exist.
func buildFleet(n, nPeers, nRoutes, nIfaces int, seed int64) []*agent {
	master := mrand.New(mrand.NewSource(seed))
	fleet := make([]*agent, n)
	bySite := make([][]int, nSites)
	for i := 0; i < n; i++ {
		a := &agent{idx: i, rng: mrand.New(mrand.NewSource(master.Int63()))}
		a.id = randHex(16)
		a.site = master.Intn(nSites)
		a.hostname = fmt.Sprintf("node-s%02d-%04d", a.site, i)
		a.pubKey = randKey()
		a.wgAddr = wgAddrOf(i)
		a.pubAddr = pubAddrOf(i)
		a.changer = master.Intn(10) == 0
		a.uptime = uint64(3600 + master.Intn(30*86400))
		fleet[i] = a
		bySite[a.site] = append(bySite[a.site], i)
	}
	// Hubs: agent 0 is the fleet hub; the first agent of each site is its site hub.
	for _, a := range fleet {
		want := nPeers
		if want > n-1 {
			want = n - 1
		}
		chosen := map[int]bool{a.idx: true}
		var targets []int
		add := func(j int) {
			if len(targets) < want && !chosen[j] {
				chosen[j] = true
				targets = append(targets, j)
			}
		}
		add(0) // global hub
		if s := bySite[a.site]; len(s) > 0 {
			add(s[0]) // site hub
		}
		same := bySite[a.site]
		for tries := 0; len(targets) < want && tries < 4*want && len(same) > 1; tries++ {
			add(same[a.rng.Intn(len(same))])
		}
		for len(targets) < want { // site too small: fill from the whole fleet
			add(a.rng.Intn(n))
		}
		for _, j := range targets {
			a.peers = append(a.peers, peerState{
				target:   j,
				phase:    uint64(a.rng.Intn(4)),
				endpoint: fleet[j].pubAddr,
				rxRate:   uint64(20000 + a.rng.Intn(3000000)),
				txRate:   uint64(20000 + a.rng.Intn(3000000)),
			})
		}
		a.initReport(fleet, nRoutes, nIfaces)
	}
	return fleet
}

func (a *agent) mac(k int) string {
	return fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", k, (a.idx>>16)&255, (a.idx>>8)&255, a.idx&255)
}

func (a *agent) initReport(fleet []*agent, nRoutes, nIfaces int) {
	r := &a.report
	r.Kind = "report"
	r.AgentID = a.id
	r.Hostname = a.hostname
	r.AgentVersion = "indepgen-0.1"
	r.Site = fmt.Sprintf("site-%02d", a.site)
	r.System.Kernel = "6.1.0-28-amd64"
	lanHost := a.idx%250 + 2
	lanNet := fmt.Sprintf("172.16.%d", a.site)

	all := []Iface{
		{Name: "eth0", Kind: "ether", State: "up", MTU: 1500, MAC: a.mac(0),
			Addresses: []string{fmt.Sprintf("%s.%d/24", lanNet, lanHost), fmt.Sprintf("2001:db8:%x::%x/64", a.site, a.idx+1)}},
		{Name: "lo", Kind: "loopback", State: "unknown", MTU: 65536,
			Addresses: []string{"127.0.0.1/8", "::1/128"}},
		{Name: "wg0", Kind: "wireguard", State: "unknown", MTU: 1420,
			Addresses: []string{a.wgAddr + "/32"}},
	}
	for k := 3; len(all) < nIfaces; k++ {
		switch k % 3 {
		case 0:
			all = append(all, Iface{Name: fmt.Sprintf("eth%d", k/3), Kind: "ether", State: "up", MTU: 1500, MAC: a.mac(k),
				Addresses: []string{fmt.Sprintf("192.168.%d.%d/24", k, lanHost)}})
		case 1:
			all = append(all, Iface{Name: fmt.Sprintf("docker%d", k/3-1), Kind: "bridge", State: "up", MTU: 1500, MAC: a.mac(k),
				Addresses: []string{fmt.Sprintf("172.%d.0.1/16", 17+k/3)}})
		case 2:
			all = append(all, Iface{Name: fmt.Sprintf("veth%d", k/3), Kind: "veth", State: "up", MTU: 1500, MAC: a.mac(k),
				Addresses: []string{}})
		}
	}
	if nIfaces < len(all) {
		all = all[:nIfaces]
	}
	r.Interfaces = all
	for range all {
		a.rates = append(a.rates, ifaceRate{rx: uint64(10000 + a.rng.Intn(30000000)), tx: uint64(10000 + a.rng.Intn(30000000))})
	}
	if nIfaces > 1 {
		a.rates[1] = ifaceRate{rx: 3000, tx: 3000} // lo: both directions equal
	}
	// start counters at a plausible age
	for i := range r.Interfaces {
		r.Interfaces[i].RxBytes = a.rates[i].rx * a.uptime / 30
		r.Interfaces[i].TxBytes = a.rates[i].tx * a.uptime / 30
	}
	a.extraIf = Iface{Name: "veth" + a.id[:7], Kind: "veth", State: "up", MTU: 1500, MAC: a.mac(200), Addresses: []string{}}

	if nRoutes > 0 {
		r.Routes = append(r.Routes, Route{Dst: "0.0.0.0/0", Gateway: lanNet + ".1", Dev: "eth0", Metric: 100, Table: 254})
	}
	for k := 1; k < nRoutes; k++ {
		if k == 1 {
			r.Routes = append(r.Routes, Route{Dst: lanNet + ".0/24", Dev: "eth0", Metric: 100, Table: 254})
			continue
		}
		r.Routes = append(r.Routes, Route{Dst: fmt.Sprintf("10.%d.%d.0/24", 100+(k/256)%100, k%256), Dev: "wg0", Table: 254})
	}
	if r.Routes == nil {
		r.Routes = []Route{}
	}

	dev := WGDevice{Name: "wg0", PublicKey: a.pubKey, ListenPort: 51820, Peers: []Peer{}}
	for _, p := range a.peers {
		dev.Peers = append(dev.Peers, Peer{
			PublicKey:           fleet[p.target].pubKey,
			Endpoint:            p.endpoint,
			AllowedIPs:          []string{fleet[p.target].wgAddr + "/32"},
			RxBytes:             p.rxRate * a.uptime / 60,
			TxBytes:             p.txRate * a.uptime / 60,
			PersistentKeepalive: 25,
		})
	}
	r.Wireguard = []WGDevice{dev}
	a.load = [3]float64{0.2 + a.rng.Float64(), 0.3 + a.rng.Float64(), 0.4 + a.rng.Float64()}
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

func jitter(rng *mrand.Rand, base uint64) uint64 {
	// base * [0.5, 1.5)
	return base/2 + uint64(rng.Int63n(int64(base)+1))
}

// next advances the agent by one 30-second step and returns its signed
// envelope. Only one goroutine holds an agent at a time.
func (a *agent) next(psk []byte) []byte {
	rng := a.rng
	r := &a.report
	a.nReports++
	a.tick++
	now := time.Now().Unix()
	r.Tick = a.tick
	r.Timestamp = now
	r.ObservedAt = now - int64(rng.Intn(2)) // now or a second earlier
	r.Nonce = randHex(16)

	if a.nReports > 1 {
		a.uptime += 30
	}
	r.System.UptimeSecs = a.uptime
	for i := range a.load {
		v := a.load[i] + (rng.Float64()-0.5)*0.3/float64(i+1)
		if v < 0.01 {
			v = 0.01
		}
		if v > 8 {
			v = 8
		}
		a.load[i] = v
		r.System.Load[i] = round2(v)
	}

	// occasional changes, for ~10% of agents
	if a.changer && a.nReports > 1 && rng.Intn(20) == 0 {
		if rng.Intn(2) == 0 && len(a.peers) > 0 {
			k := rng.Intn(len(a.peers))
			p := &a.peers[k]
			host := p.endpoint[:strings.LastIndexByte(p.endpoint, ':')]
			p.endpoint = fmt.Sprintf("%s:%d", host, 1024+rng.Intn(64000)) // NAT rebinding
			r.Wireguard[0].Peers[k].Endpoint = p.endpoint
		} else {
			a.extraUp = !a.extraUp
		}
	}

	for i := range r.Interfaces {
		r.Interfaces[i].RxBytes += jitter(rng, a.rates[i].rx)
		r.Interfaces[i].TxBytes += jitter(rng, a.rates[i].tx)
	}
	if a.extraUp {
		a.extraIf.RxBytes += jitter(rng, 50000)
		a.extraIf.TxBytes += jitter(rng, 50000)
	}

	peers := r.Wireguard[0].Peers
	for k := range peers {
		p := &a.peers[k]
		peers[k].RxBytes += jitter(rng, p.rxRate)
		peers[k].TxBytes += jitter(rng, p.txRate)
		lh := peers[k].LatestHandshake
		switch {
		case a.nReports == 1:
			lh = now - int64(p.phase)*30 // as if the last handshake was up to 90 s ago
		case (a.nReports+p.phase)%4 == 0:
			lh = now // re-handshake every 4th report (~2 min)
		}
		if now-lh > 150 { // reports of this agent were far apart in real time
			lh = now - int64(rng.Intn(30))
		}
		if lh > now {
			lh = now
		}
		if lh < 0 {
			lh = 0
		}
		peers[k].LatestHandshake = lh
	}

	// marshal; the optional extra interface is appended for this report only
	ifs := r.Interfaces
	if a.extraUp {
		r.Interfaces = append(append(make([]Iface, 0, len(ifs)+1), ifs...), a.extraIf)
	}
	data, err := json.Marshal(r)
	r.Interfaces = ifs
	if err != nil {
		panic(err)
	}
	return envelope(data, psk)
}

// envelope builds {"version":1,"data":<data>,"hmac":"<hex>"} by plain byte
// concatenation, so the data bytes sent are exactly the bytes MACed
// (json.Marshal of a RawMessage would re-compact and could re-escape them).
func envelope(data, psk []byte) []byte {
	m := hmac.New(sha256.New, psk)
	m.Write(data)
	sum := hex.EncodeToString(m.Sum(nil))
	buf := make([]byte, 0, len(data)+100)
	buf = append(buf, `{"version":1,"data":`...)
	buf = append(buf, data...)
	buf = append(buf, `,"hmac":"`...)
	buf = append(buf, sum...)
	buf = append(buf, `"}`...)
	return buf
}

// ---------------------------------------------------------------- load loop

type stats struct {
	mu       sync.Mutex
	ok       int
	codes    map[int]int
	netErrs  int
	firstErr []string
	lat      []time.Duration
	bytes    int64
	sent     int
}

func newStats() *stats { return &stats{codes: map[int]int{}} }

func (s *stats) add(status int, body []byte, err error, d time.Duration, size int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent++
	s.bytes += int64(size)
	s.lat = append(s.lat, d)
	switch {
	case err != nil:
		s.netErrs++
		if len(s.firstErr) < 5 {
			s.firstErr = append(s.firstErr, "transport: "+err.Error())
		}
	case status == 200:
		s.ok++
	default:
		s.codes[status]++
		if len(s.firstErr) < 5 {
			s.firstErr = append(s.firstErr, fmt.Sprintf("%d %s", status, strings.TrimSpace(string(body))))
		}
	}
}

func post(client *http.Client, url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	b, err := io.ReadAll(resp.Body) // read fully so the connection is reused
	resp.Body.Close()
	return resp.StatusCode, b, err
}

// run drives the fleet with `conc` goroutines. An agent is in the idle
// channel when no goroutine holds it. With once=true every agent sends
// exactly one report (warm-up); otherwise the loop runs until the deadline.
func run(client *http.Client, url string, psk []byte, fleet []*agent, conc int, once bool, deadline time.Time) *stats {
	st := newStats()
	idle := make(chan *agent, len(fleet))
	for _, a := range fleet {
		idle <- a
	}
	var wg sync.WaitGroup
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if !once && time.Now().After(deadline) {
					return
				}
				var a *agent
				if once {
					select {
					case a = <-idle:
					default:
						return
					}
				} else {
					a = <-idle
				}
				body := a.next(psk)
				t0 := time.Now()
				code, resp, err := post(client, url, body)
				st.add(code, resp, err, time.Since(t0), len(body))
				if !once {
					idle <- a
				}
			}
		}()
	}
	wg.Wait()
	return st
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func pct(l []time.Duration, p float64) float64 {
	if len(l) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(l)))) - 1
	if i < 0 {
		i = 0
	}
	return float64(l[i].Microseconds()) / 1000
}

func codesString(s *stats) string {
	var keys []int
	for k := range s.codes {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d:%d", k, s.codes[k]))
	}
	if s.netErrs > 0 {
		parts = append(parts, fmt.Sprintf("neterr:%d", s.netErrs))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

func main() {
	url := flag.String("url", "http://127.0.0.1:5086", "receiver base URL")
	pskFlag := flag.String("psk", "", "fleet PSK (HMAC key, UTF-8 text)")
	nAgents := flag.Int("agents", 1000, "simulated agents")
	conc := flag.Int("concurrency", 64, "concurrent closed-loop senders")
	dur := flag.Float64("duration", 15, "measured phase, seconds")
	warmup := flag.Bool("warmup", true, "send every agent's first report before measuring")
	keepalive := flag.Bool("keepalive", true, "reuse HTTP connections")
	nPeers := flag.Int("peers", 6, "WireGuard peers per agent")
	nRoutes := flag.Int("routes", 8, "routes per agent")
	nIfaces := flag.Int("ifaces", 4, "interfaces per agent")
	seed := flag.Int64("seed", 1, "seed for the simulated fleet's shape (ids and keys are always random)")
	flag.Parse()
	if *pskFlag == "" {
		*pskFlag = os.Getenv("KATTILA_PSK")
	}
	if *pskFlag == "" || *nAgents < 1 || *conc < 1 {
		fmt.Fprintln(os.Stderr, "need -psk (or KATTILA_PSK), -agents >= 1, -concurrency >= 1")
		os.Exit(2)
	}
	psk := []byte(*pskFlag)
	target := strings.TrimRight(*url, "/") + "/status/updates"

	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        0, // no global limit
		MaxIdleConnsPerHost: *conc,
		DisableKeepAlives:   !*keepalive,
		IdleConnTimeout:     90 * time.Second,
	}
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}

	fleet := buildFleet(*nAgents, *nPeers, *nRoutes, *nIfaces, *seed)

	if *warmup {
		cpu0 := cpuSeconds()
		t0 := time.Now()
		ws := run(client, target, psk, fleet, *conc, true, time.Time{})
		el := time.Since(t0).Seconds()
		fmt.Printf("warmup: %d agents in %.2fs (%.0f reports/s), committed=%d other=%s cpu=%.2fs\n",
			*nAgents, el, float64(ws.sent)/el, ws.ok, codesString(ws), cpuSeconds()-cpu0)
		for _, e := range ws.firstErr {
			fmt.Printf("  warmup non-200: %s\n", e)
		}
	}

	cpu0 := cpuSeconds()
	t0 := time.Now()
	st := run(client, target, psk, fleet, *conc, false, t0.Add(time.Duration(*dur*float64(time.Second))))
	el := time.Since(t0).Seconds()
	cpu := cpuSeconds() - cpu0

	sort.Slice(st.lat, func(i, j int) bool { return st.lat[i] < st.lat[j] })
	var max float64
	if n := len(st.lat); n > 0 {
		max = float64(st.lat[n-1].Microseconds()) / 1000
	}
	mean := 0.0
	if st.sent > 0 {
		mean = float64(st.bytes) / float64(st.sent)
	}
	fmt.Printf("result: agents=%d conc=%d keepalive=%v warmup=%v elapsed=%.2fs sent=%d committed=%d other=%s rate=%.1f reports/s "+
		"p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms gen_cpu=%.2fs (total %.2fs) mean_size=%.0fB\n",
		*nAgents, *conc, *keepalive, *warmup, el, st.sent, st.ok, codesString(st), float64(st.ok)/el,
		pct(st.lat, 0.50), pct(st.lat, 0.90), pct(st.lat, 0.99), max, cpu, cpuSeconds(), mean)
	for _, e := range st.firstErr {
		fmt.Printf("  non-200: %s\n", e)
	}
}
