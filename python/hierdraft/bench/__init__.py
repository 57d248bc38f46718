"""End-to-end benchmark of hierdraft against its peers (`hierdraft bench`).

Modules, one job each (the question files and the prompt template they share with the
model-store builder are `hierdraft.questions` and `hierdraft.prompts`):

- `methods`: the decoding methods compared (`ar`, `hf-ar`, `hf-pld`, `context`, `model`,
  `corpus`, `hd`), each an object with `run(prompt_ids) -> PromptRecord`.
- `llama_cpp_methods`: the peers `llama.cpp` and `llama.cpp-pld` (llama.cpp on the same GGUF
  file, through llama-cpp-python), methods of the same shape.
- `runner`: runs every method on the same prompts, interleaved, and checks exactness.
- `report`: aggregates the records into `results.json`, `report.md` and `speedup.png`.
- `cli_bench`: the `bench` sub-command (`add_bench_parser`, `run_bench_command`).
"""
