# Benchmarks beside `make bench` (Makefile): streamscore against the peers in infra/bench/peers/.

.PHONY: bench-peers bench-quick
bench-peers: install model ## streamscore (make run's defaults) and the peers on one workload, one run: events/s, CPU s/10k, live p99 at 2,000 tx/s, peak RSS, late events; ratios in the last JSON line (PEERS_ARGS)
	$(PY) -m infra.bench.peers.run --out bench-results $(PEERS_ARGS)

bench-quick: install model ## make bench's short settings for iterating (3 default drains of 120k, 10 s per live rate, no variants)
	$(PY) -m infra.bench.run --out bench-results --quick
