"""Judge with a local transformers model: the same probability-weighted 0-100 score as the
endpoint judge, read from the model's own distribution over the integers (see `numbers`).

The model is a variant from `params.models` named by `judge.variant`, so it loads with
the usual dtype / device / device_map / revision / chat-template settings.
"""

from __future__ import annotations

from collections.abc import Iterator

from steerops.judges.base import check_judge_variant
from steerops.judges.cache import Entry, JudgeCache, open_cache
from steerops.judges.cached import CachedJudge, Job
from steerops.judges.numbers import NumberTrie, encode, integer_distributions, number_trie
from steerops.judges.prompts import JudgePrompts, prompts_for
from steerops.judges.scoring import weighted_score
from steerops.models.batching import Batcher, length_order
from steerops.models.generation import format_prompt


class HFJudge(CachedJudge):
    kind_name = "hf"

    def __init__(
        self,
        model,
        tokenizer,
        model_name: str,
        prompts: JudgePrompts,
        cache: JudgeCache,
        *,
        min_prob_mass: float = 0.25,
        batch_size: int = 8,
        prune_prob: float = 1e-4,
        progress: bool = True,
        settings: dict | None = None,
    ):
        settings = {**(settings or {}), "prune_prob": prune_prob}
        super().__init__(model_name, prompts, cache, min_prob_mass, progress, settings)
        self.model = model
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"  # the answer distribution is read at the last column
        self.batch_size = batch_size
        self.prune_prob = prune_prob
        self.trie: NumberTrie = number_trie(tokenizer, self.render(Job("trait", "q", "a")))

    @classmethod
    def check_params(cls, params, trait) -> JudgePrompts:
        """Refuse what `from_params` would refuse before it loads a model: no
        judge.variant, an unknown one or one that cannot load here (source, device), no
        rubric. Returns the prompts."""
        check_judge_variant(params, "the name of the judge's model variant in `models`")
        return prompts_for(trait)

    @classmethod
    def from_params(cls, params, trait, loaded=None) -> HFJudge:
        from steerops.models.fingerprint import model_label
        from steerops.models.loading import load_model

        cfg = params.judge
        prompts = cls.check_params(params, trait)
        loaded = load_model(params, cfg.variant, padding_side="left", reuse=loaded)
        # Named by content, not by path: a copied cache stays valid, changed weights do not.
        name = model_label(loaded.source, loaded.spec.revision)
        settings = {
            "dtype": loaded.spec.dtype,
            "chat_template": str(loaded.tokenizer.chat_template or ""),
            "version": cfg.version,
        }
        return cls(
            loaded.model,
            loaded.tokenizer,
            name,
            prompts,
            open_cache(params),
            min_prob_mass=cfg.min_prob_mass,
            batch_size=cfg.batch_size,
            prune_prob=cfg.prune_prob,
            settings=settings,
        )

    def render(self, job: Job) -> str:
        return format_prompt(self.tokenizer, self.prompts.messages(*job))

    def _answer(self, jobs: list[Job]) -> Iterator[tuple[int, Entry]]:
        texts = [self.render(job) for job in jobs]
        lengths = [len(encode(self.tokenizer, t)) for t in texts]
        batcher = Batcher(
            max_rows=self.batch_size,
            what="judge prompt",
            hint="lower judge.batch_size or use a smaller judge model",
        )

        def compute(chunk: list[int]) -> list[dict[int, float]]:
            return integer_distributions(
                self.model, self.tokenizer, [texts[i] for i in chunk], self.trie, self.prune_prob
            )

        for chunk, dists in batcher.iterate(length_order(lengths), lengths, compute):
            for i, dist in zip(chunk, dists, strict=True):
                yield i, weighted_score(dist)
