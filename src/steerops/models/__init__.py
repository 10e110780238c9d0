"""The model side every stage shares: loading a variant (`loading`), where an architecture
keeps its blocks (`resolver`), reading activations (`capture`), generating (`generation`)
and batching (`batching`).

Importing the package is cheap; import the submodule you need."""
