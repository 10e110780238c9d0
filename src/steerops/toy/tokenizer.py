"""Word-level tokenizer for the toy world, loadable through `AutoTokenizer.from_pretrained`.

One token per whitespace-separated word (the corpus is pre-spaced), plus special tokens and
role markers. Every turn is `<|role|> content <eos>`, so `<eos>` doubles as the end-of-turn
token that stops generation, as in chat models whose eos is their end-of-turn marker.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from steerops.toy.corpus import vocabulary

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, *ROLE_TOKENS]

# Rendered text is space separated so the WhitespaceSplit pre-tokenizer sees every marker as
# its own word; the generation prompt ends right after the assistant marker.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('toy chat template: unknown role ' + message['role']) }}"
    "{% endif %}"
    "{{ ' <|' + message['role'] + '|> ' + message['content'] | trim + ' ' + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ ' <|assistant|>' }}{% endif %}"
)


def build_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `words` (default: the corpus vocabulary); ids are fixed by
    the sorted vocabulary, so the same corpus always gives the same ids."""
    words = vocabulary() if words is None else sorted(set(words))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Join words with spaces when decoding (WordLevel has no decoder of its own).
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
        padding_side="left",
        model_max_length=128,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
