"""Embedding models through sentence-transformers' trainer: pairs, triplets or scored pairs; full or LoRA.

    $ tunekit embed recipes/tiny/embed.yaml
    $ tunekit embed recipes/embed-minilm.yaml adapter.type=lora

Reads top to bottom: `check` (in the preflight stage: the loss fits the rows, the held-out retrieval task is
built) -> the model (load: a sentence-transformers folder as it is; any other encoder gets mean pooling, as
sentence-transformers builds it) -> SentenceTransformerTrainer with the loss and an evaluator -> eval / train /
eval / save (tunekit.train.fit).

Losses (`embed.loss`, sentence-transformers' classes): MultipleNegativesRankingLoss for anchor/positive pairs
(every other positive in the batch is a negative; batches never hold the same text twice) and for triplets (the
`negative` joins them); CoSENTLoss or CosineSimilarityLoss for sentence1/sentence2/score rows.

Held-out figures, before and after (sentence-transformers' evaluators): pairs and triplets become a retrieval
task, each eval anchor a query whose relevant documents are its positives, searched among `embed.corpus`
(default: every positive and negative of train and eval): `eval_recall@1`, `eval_recall@10`, `eval_mrr@10`;
scored pairs: `eval_spearman` and `eval_pearson` between the model's similarity and the scores.

`final/` is a sentence-transformers folder: `SentenceTransformer("final")` loads it. Under LoRA (peft on the
encoder) only the adapter trains, and it is merged into the encoder when training ends, so `final/` is a whole
model: transformers 5.24 loads adapters only with peft >= 0.22, and tunekit's pinned peft 0.21 would leave an
adapter folder unloadable. Checkpoints of a LoRA run (`training.save_steps`) would hold such an adapter, so a
LoRA embed run takes none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunekit.data import first_rows, rows_of
from tunekit.errors import DataError, UserError
from tunekit.train.fit import fit_trainer
from tunekit.train.pipeline import Echo, Plan, Run
from tunekit.train.summary import Trained

HEAD = "embed"


@dataclass
class Retrieval:
    """Held-out queries and the documents they are searched among (sentence-transformers' evaluator inputs)."""

    queries: dict[str, str] = field(default_factory=dict)
    corpus: dict[str, str] = field(default_factory=dict)
    relevant: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class Prepared:
    loss: str  # multiple_negatives_ranking, cosent or cosine_similarity
    retrieval: Retrieval | None  # pairs and triplets with eval rows


def check(plan: Plan) -> Prepared:
    """The loss for these rows, the model a folder (not an adapter, not quantised), and the retrieval task."""
    recipe, data = plan.recipe, plan.data
    name = recipe.model.name_or_path
    if plan.ref.adapter is not None:
        raise UserError(
            f"{name} is an adapter folder; tunekit embed starts from a model (an encoder or an embedding model)"
        )
    if recipe.model.quantization != "none":
        raise UserError(f"model.quantization: {recipe.model.quantization}: tunekit embed trains full or LoRA weights")
    if recipe.adapter.type != "none" and recipe.training.save_steps:
        raise UserError(
            "training.save_steps: a LoRA embed run merges its adapter when it ends, and a checkpoint would hold the "
            "adapter alone, which transformers 5.24 cannot load with peft 0.21; drop save_steps or train in full"
        )
    loss = recipe.embed.loss_for(data.kind)
    scored = data.kind == "scored_pair"
    if scored != (loss in ("cosent", "cosine_similarity")):
        wanted = "cosent or cosine_similarity" if scored else "multiple_negatives_ranking"
        raise UserError(f"embed.loss: {loss} does not train on {data.format} rows; use {wanted} (or auto)")
    if loss == "cosine_similarity":
        for part, rows in (("train", data.train["score"]), ("eval", data.eval["score"] if data.eval else [])):
            for number, score in enumerate(rows, start=1):
                if not -1 <= score <= 1:
                    raise DataError(
                        f"{recipe.data.train if part == 'train' else data.eval_source} ({part} example {number}): "
                        f"field 'score': {score:g} is outside [-1, 1], the range of a cosine "
                        "(embed.loss: cosent ranks scores on any scale)"
                    )
    retrieval = None
    if not scored and data.eval:
        retrieval = retrieval_task(rows_of(data.train), rows_of(data.eval), recipe.embed.corpus)
    return Prepared(loss, retrieval)


def retrieval_task(train: list[dict], held_out: list[dict], corpus: str) -> Retrieval:
    """Each distinct eval anchor is a query; its relevant documents are its positives; the documents are the
    distinct positives and negatives of the eval rows, and with `corpus: all` of the train rows too."""
    task, ids = Retrieval(), {}
    for row in (train + held_out) if corpus == "all" else held_out:
        for text in (row["positive"], row.get("negative")):
            if text is not None and text not in ids:
                ids[text] = f"d{len(ids)}"
                task.corpus[ids[text]] = text
    queries: dict[str, str] = {}
    for row in held_out:
        query = queries.setdefault(row["anchor"], f"q{len(queries)}")
        task.queries[query] = row["anchor"]
        task.relevant.setdefault(query, set()).add(ids[row["positive"]])
    return task


def train(run: Run, echo: Echo) -> Trained:
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    from tunekit.train.builders import trainer_kwargs, trainer_rows
    from tunekit.train.callbacks import callbacks

    recipe, model, made = run.recipe, run.model, run.plan.prepared
    model.max_seq_length = recipe.data.max_length
    card = model.model_card_data
    card.local_files_only = True  # the model card looks nothing up on the Hub
    # Its example: the first training row (sentence-transformers would sample some behind a progress bar,
    # from Python's global random state).
    texts = [value for value in first_rows(run.data.train, 1)[0].values() if isinstance(value, str)]
    card.widget = [{"source_sentence": texts[0], "sentences": texts[1:]}]
    extra = [_add_lora(model, recipe.adapter)] if recipe.adapter.type != "none" else []
    kwargs = trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(run.data.eval))
    kwargs["include_num_input_tokens_seen"] = "no"  # its batches hold `sentence_0_input_ids`, ..., no `input_ids`
    in_batch = made.loss == "multiple_negatives_ranking"  # a text twice in a batch would be its own negative
    args = SentenceTransformerTrainingArguments(
        **kwargs, batch_sampler=BatchSamplers.NO_DUPLICATES if in_batch else BatchSamplers.BATCH_SAMPLER
    )
    evaluator, figures = _evaluator(run, made.retrieval, model.similarity_fn_name)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=trainer_rows(run.data.train),
        eval_dataset=trainer_rows(run.data.eval) if run.data.eval else None,
        loss=_loss(made.loss, model, recipe.embed.scale),
        evaluator=evaluator,
        callbacks=callbacks(recipe, run.out, run.log) + extra,
    )
    echo(f"embed: {made.loss} loss" + (f", {_describe(made.retrieval)}" if made.retrieval else ""))
    return fit_trainer(trainer, run, echo, figures, extra_summary={"embed_loss": made.loss})


def _loss(name: str, model: Any, scale: float) -> Any:
    from sentence_transformers.sentence_transformer import losses

    if name == "multiple_negatives_ranking":
        return losses.MultipleNegativesRankingLoss(model, scale=scale)
    if name == "cosent":
        return losses.CoSENTLoss(model, scale=scale)
    return losses.CosineSimilarityLoss(model)


def _evaluator(run: Run, retrieval: Retrieval | None, similarity: str) -> tuple[Any, dict[str, str]]:
    """sentence-transformers' evaluator for the held-out rows, and summary name -> the metric it reports."""
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
        InformationRetrievalEvaluator,
    )

    figures = {"eval_loss": "eval_loss"}
    rows, batch = rows_of(run.data.eval), run.recipe.training.batch_size
    if not rows:
        return None, figures
    if retrieval is None:
        evaluator = EmbeddingSimilarityEvaluator(
            [r["sentence1"] for r in rows],
            [r["sentence2"] for r in rows],
            [r["score"] for r in rows],
            batch_size=batch,
            similarity_fn_names=[similarity],
            name="similarity",
            write_csv=False,
        )
        prefix = "eval_similarity"
        return evaluator, {
            **figures,
            "eval_spearman": f"{prefix}_spearman_{similarity}",
            "eval_pearson": f"{prefix}_pearson_{similarity}",
        }
    evaluator = InformationRetrievalEvaluator(
        retrieval.queries,
        retrieval.corpus,
        retrieval.relevant,
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[1, 10],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[10],
        batch_size=batch,
        name="retrieval",
        write_csv=False,
    )
    prefix = f"eval_retrieval_{similarity}"
    return evaluator, {
        **figures,
        "eval_recall@1": f"{prefix}_recall@1",
        "eval_recall@10": f"{prefix}_recall@10",
        "eval_mrr@10": f"{prefix}_mrr@10",
    }


def _describe(task: Retrieval) -> str:
    return f"{len(task.queries)} held-out queries searched among {len(task.corpus)} documents"


def _add_lora(model: Any, adapter: Any) -> Any:
    """peft's LoRA on the encoder inside the sentence-transformers model (its Transformer module), and the
    callback that merges it back when training ends (see the module docstring)."""
    from peft import get_peft_model
    from sentence_transformers.base.modules import Transformer
    from transformers import TrainerCallback

    from tunekit.train.builders import peft_config

    encoder = next(module for module in model.modules() if isinstance(module, Transformer))
    encoder.model = get_peft_model(encoder.model, peft_config(adapter, encoder.model, "FEATURE_EXTRACTION"))

    class MergeLoRA(TrainerCallback):
        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            encoder.model = encoder.model.merge_and_unload()

    return MergeLoRA()
