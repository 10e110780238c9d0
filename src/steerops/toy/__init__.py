"""The embedded toy world: a synthetic chat corpus, a word-level tokenizer with a chat
template, a small Llama trained on CPU, an exact judge, and the builder that writes the
model and the toy/refusal trait dataset to disk (see DESIGN.md, "The embedded toy world")."""
