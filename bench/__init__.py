"""Benchmark of the embedding server against its physical limit and against the naive design.

`python -m bench` (= `make bench`) measures, in one run and on one machine:

- the limit: the server's own encoder in-process with ideal batching (no HTTP, no queue);
- our server: `python -m service` under a closed-loop async HTTP load at several concurrencies;
- the naive design: `bench.naive_server`, one forward pass per request, no batching;

and writes JSON, a markdown table and a PNG plot to `bench/results/<machine>/`. `python -m bench
--gpu` (= `make bench-gpu`) measures tokens/s and model FLOPs utilisation of a BERT-large forward
pass on a GPU. Nothing here is shipped in the server image."""
