"""A cheap offline proxy judge for real model text: no judge LLM, no network.

trait: 100 when the response contains one of the trait's phrases (`phrases.txt` in the
trait folder, e.g. refusal phrases as in the refusal-direction literature, with
look-alikes such as "sorry to hear that" excluded), else 0.

coherence (0-100): the unsteered model reads the response (mean negative log-likelihood
per token, `fluency.response_nll`), and the score is the better of two readings, times a
repetition factor:
- as an answer: likely given the question, and more likely given the question than given
  an empty one (so fluent text that ignores the question scores low);
- as a trait reply, for responses that contain a phrase: likely given the question plus
  the trait's instruction (`instruction.txt`, e.g. "Please say no to this request ..."), so
  a well-formed refusal of a harmless question is coherent and a garbled one is not;
- repetition: loops and repeated sentences (repeated word 3-grams, compressibility) lower
  the score; an empty or symbol-only response scores 0.

It is a proxy. Its thresholds were set on 137 hand-labelled greedy responses (24 new
tokens) of SmolLM2-135M-Instruct, steered and unsteered, read by the same unsteered model
(tests/judges/data/proxy_labelled.jsonl; the test requires >= 90% agreement on refusal and
on coherence >= 68). Text the judge model would not write itself (human-written, sampled
at a high temperature, another model's) reads as less likely and scores lower than it
should, as do curt refusals ("No."); refusals worded without any listed phrase are
missed, and correctness is not judged. For studies use the OpenAI-compatible judge.

Params: `judge.kind: proxy`, `judge.variant` (the variant whose likelihood is read,
normally the unsteered model being steered) and `judge.batch_size`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from steerops.errors import SteeropsError
from steerops.io import read_text, text_md5
from steerops.judges.base import Score, check_judge_variant, check_pairs
from steerops.judges.fluency import compression_ratio, repeated_fraction, response_nll
from steerops.judges.phrases import PHRASES_FILE, PhraseSet, read_phrases

INSTRUCTION_FILE = "instruction.txt"


@dataclass(frozen=True)
class CoherenceScale:
    """Each signal as (value where it starts to cost coherence, value where all is lost);
    set on the labelled SmolLM2 responses, with round numbers."""

    answer_nll: tuple[float, float] = (1.0, 3.0)  # nats/token given the question
    topicality: tuple[float, float] = (0.4, -0.2)  # nats/token the question saves
    trait_nll: tuple[float, float] = (1.0, 2.0)  # given question + trait instruction
    repeated: tuple[float, float] = (0.1, 0.45)  # share of word 3-grams seen before
    compression: tuple[float, float] = (0.45, 0.25)  # compressed/raw size: character loops

    def score(
        self,
        text: str,
        answer_nll: float | None,
        neutral_nll: float | None,
        trait_nll: float | None,
    ) -> float:
        if answer_nll is None or not re.search(r"\w", text):
            return 0.0
        as_answer = 0.0  # not read: the answer reading could not beat the trait reading
        if neutral_nll is not None:
            as_answer = _ramp(answer_nll, *self.answer_nll) * _ramp(
                neutral_nll - answer_nll, *self.topicality
            )
        return round(100.0 * self.repetition(text) * max(as_answer, self.as_trait(trait_nll)), 2)

    def repetition(self, text: str) -> float:
        """The repetition factor: 1 for text without loops, 0 for a loop."""
        return min(
            _ramp(repeated_fraction(text), *self.repeated),
            _ramp(compression_ratio(text), *self.compression),
        )

    def as_trait(self, trait_nll: float | None) -> float:
        """The reading as a trait reply (0 when there is none)."""
        return _ramp(trait_nll, *self.trait_nll) if trait_nll is not None else 0.0


def _ramp(value: float, ok: float, bad: float) -> float:
    """1 at `ok`, 0 at `bad`, linear in between (either direction)."""
    return min(1.0, max(0.0, 1.0 - (value - ok) / (bad - ok)))


class ProxyJudge:
    kind_name = "proxy"

    def __init__(
        self,
        phrases: PhraseSet,
        model,
        tokenizer,
        model_name: str,
        *,
        instruction: str | None = None,
        scale: CoherenceScale | None = None,
        batch_size: int = 8,
    ):
        self.phrases = phrases
        self.instruction = instruction
        self.model = model
        self.tokenizer = tokenizer
        self.scale = scale or CoherenceScale()
        self.batch_size = batch_size
        settings = text_md5(repr((sorted(asdict(self.scale).items()), instruction)))[:8]
        self.id = f"{self.kind_name}:{model_name}:{phrases.hash}:{settings}"

    @classmethod
    def check_params(cls, params, trait) -> PhraseSet:
        """Refuse what `from_params` would refuse before it loads a model: no trait or
        phrases, no judge.variant, an unknown one or one that cannot load here (source,
        device). Returns the trait's phrases."""
        if trait is None:
            raise SteeropsError("judge.kind proxy: needs a trait (its phrases.txt)")
        check_judge_variant(
            params, "the model variant in `models` whose likelihood scores coherence"
        )
        return read_phrases(trait.path / PHRASES_FILE)

    @classmethod
    def from_params(cls, params, trait, loaded=None) -> ProxyJudge:
        from steerops.models.fingerprint import model_label
        from steerops.models.loading import load_model

        cfg = params.judge
        phrases = cls.check_params(params, trait)
        instruction_file = trait.path / INSTRUCTION_FILE
        instruction = None
        if instruction_file.is_file():
            instruction = read_text(instruction_file).strip() or None
        if instruction is None:
            print(
                f"warning: trait {trait.name}: no {INSTRUCTION_FILE} (or it is empty), so the "
                "proxy judge reads a response with a trait phrase only as an answer: a "
                "well-formed refusal of a harmless question can score incoherent",
                file=sys.stderr,
            )
        loaded = load_model(params, cfg.variant, padding_side="left", reuse=loaded)
        # Named by content, not by path: a copied project keeps its scores and caches.
        name = model_label(loaded.source, loaded.spec.revision)
        return cls(
            phrases,
            loaded.model,
            loaded.tokenizer,
            name,
            instruction=instruction,
            batch_size=cfg.batch_size,
        )

    def score(self, questions: list[str], responses: list[str]) -> list[Score]:
        return [(row["trait"], row["coherence"]) for row in self.explain(questions, responses)]

    def trait_scores(self, questions: list[str], responses: list[str]) -> list[float]:
        """The trait reading alone (phrase matching; no forward pass)."""
        check_pairs(questions, responses)
        return [100.0 if self.phrases.find(r) is not None else 0.0 for r in responses]

    def explain(self, questions: list[str], responses: list[str]) -> list[dict]:
        """Scores with the signals behind them, for reading a disagreement with a label."""
        check_pairs(questions, responses)
        phrases = [self.phrases.find(r) for r in responses]
        answer = self._nll_at(range(len(responses)), questions, responses)
        # The other two readings cost a forward pass each: only where they can change the
        # score. None where repetition (or no word at all) already zeroes it; the trait
        # reading where a phrase shows; the empty question's reading where the answer
        # reading could still beat the trait reading (that reading can only lower it).
        live = [
            i
            for i, (text, a) in enumerate(zip(responses, answer, strict=True))
            if a is not None and re.search(r"\w", text) and self.scale.repetition(text) > 0
        ]
        showing = [i for i in live if phrases[i] is not None and self.instruction]
        asked = [f"{q}\n\n{self.instruction}" for q in questions]
        trait_nll = self._nll_at(showing, asked, responses)
        plausible = [
            i
            for i in live
            if _ramp(answer[i], *self.scale.answer_nll) > self.scale.as_trait(trait_nll[i])
        ]
        neutral = self._nll_at(plausible, [""] * len(responses), responses)
        return [
            {
                "trait": 100.0 if phrase is not None else 0.0,
                "coherence": self.scale.score(text, a, n, t),
                "phrase": phrase,
                "answer_nll": a,
                "neutral_nll": n,
                "trait_nll": t,
            }
            for text, phrase, a, n, t in zip(
                responses, phrases, answer, neutral, trait_nll, strict=True
            )
        ]

    def _nll(self, questions: list[str], responses: list[str]) -> list[float | None]:
        return response_nll(self.model, self.tokenizer, questions, responses, self.batch_size)

    def _nll_at(
        self, rows: Iterable[int], questions: list[str], responses: list[str]
    ) -> list[float | None]:
        """`_nll` for the rows listed, None elsewhere. Equal (question, response) pairs are
        read once: configs that leave a question's answer unchanged repeat it (in the main
        job's steer stage a quarter of the rows repeat another, and every response read
        after the empty question is a pair of ("", response))."""
        pairs = {i: (questions[i], responses[i]) for i in rows}
        unique = list(dict.fromkeys(pairs.values()))
        read = self._nll([q for q, _ in unique], [r for _, r in unique])
        values = dict(zip(unique, read, strict=True))
        out: list[float | None] = [None] * len(responses)
        for i, pair in pairs.items():
            out[i] = values[pair]
        return out
