module kattila-independent-gen

go 1.19
