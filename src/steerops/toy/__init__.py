"""The embedded toy world: a synthetic chat corpus, a word-level tokenizer with a chat
template, a small Llama trained on CPU, an exact judge, and the builder that writes the
model and the toy/refusal trait dataset to disk.

The package is also a library below the stages: the judges use its exact judge (`judge`,
`corpus`); only `command` (the `steerops toy` stage) imports a stage package."""
