package main

import (
	"strings"
	"testing"
)

// Vector 1 from docs/protocol.md.
func TestVector1(t *testing.T) {
	data := `{"kind":"report","agent_id":"5f1c0e2a9b7d4c3e8a6f0b1d2c3e4f50","timestamp":1767225600,"nonce":"00112233445566778899aabbccddeeff","tick":42,"observed_at":1767225590,"hostname":"edge-1","agent_version":"0.1.0","system":{"uptime_secs":86400,"load":[0.15,0.1,0.05],"kernel":"6.1.0-28-amd64"},"interfaces":[{"name":"eth0","kind":"ether","state":"up","mtu":1500,"mac":"52:54:00:12:34:56","addresses":["192.0.2.10/24","2001:db8::10/64"],"rx_bytes":123456,"tx_bytes":654321,"rx_errors":0,"tx_errors":0}],"routes":[{"dst":"0.0.0.0/0","gateway":"192.0.2.1","dev":"eth0","metric":100,"table":254}],"wireguard":[{"name":"wg0","public_key":"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=","listen_port":51820,"peers":[{"public_key":"TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=","endpoint":"198.51.100.7:51820","allowed_ips":["10.99.0.2/32"],"latest_handshake":1767225580,"rx_bytes":2048,"tx_bytes":4096,"persistent_keepalive":25}]}]}`
	env := string(envelope([]byte(data), []byte("kattila-test-vector-psk-1")))
	want := `{"version":1,"data":` + data + `,"hmac":"b2166ac75172f74d570404603a24e08d8bf00c21f72bcf72b0c026226d0608d3"}`
	if env != want {
		t.Fatalf("envelope mismatch:\n%s", env[len(env)-80:])
	}
	if !strings.HasSuffix(env, `"}`) {
		t.Fatal("bad tail")
	}
}
