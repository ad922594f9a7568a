"""What the training and evaluation messages do at a site: unpack the message, call the plain
functions, pack the reply (the statistics query is :mod:`client.site_query`). ``client.app``
registers these with Flower and imports this module with the site's first training or
evaluation message.

Node facts come from ``node_config``: ``manifest`` (this site's CSV), optional ``cache-dir``,
``state-dir`` (where the site keeps what is its own: personalised weights, its privacy
ledger) and ``privacy-budget`` (the site's own lifetime epsilon limit under DP). In
simulation the node's ``partition-id`` picks a manifest of the run config's ``sites-dir``
and the state lives under the run folder. Per-round values ride in the message's
ConfigRecord, whose layout is :class:`client.messages.RoundConfig`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from logging import WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.logger import log
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from client import messages as keys
from client.data import SiteDataset, default_cache_dir, load_site_dataset
from client.features import FeatureSpec
from client.ledger import PrivacyLedger
from client.manifest import Manifest
from client.messages import RoundConfig
from client.personalization import personal_model, personal_round
from client.privacy import BudgetExceeded, SitePrivacy, ledger_root
from client.round import round_seed
from client.secure_aggregation import is_secure
from client.secure_update import encode_update
from client.site_evaluation import evaluate_at_site
from client.site_query import read_site_manifest, site_manifest_path, site_record
from client.train import evaluate, resolve_device
from fusion_models.model import ModelSpec, MultimodalModel, build_model
from fusion_models.task import Task, make_task

__all__ = ["evaluate_final", "evaluate_round", "site_state_dir", "train"]


def site_state_dir(context: Context, site: str) -> Path:
    """Where this site keeps its own state: ``node_config["state-dir"]``, else
    ``<run-dir>/site_state/<site>`` in a simulation, else beside the manifest."""
    configured = context.node_config.get("state-dir")
    if configured:
        return Path(str(configured))
    run_dir = str(context.run_config.get("run-dir", ""))
    if run_dir:
        return Path(run_dir) / "site_state" / site
    return site_manifest_path(context).parent / ".fedfusion-state" / site


def _cache_dir(context: Context, manifest: Manifest) -> Path:
    configured = context.node_config.get("cache-dir")
    return Path(str(configured)) if configured else default_cache_dir(manifest)


@dataclass
class _Site:
    """What a train or evaluate message unpacks to at this site."""

    manifest: Manifest
    config: RoundConfig
    server_round: int
    task: Task
    model: MultimodalModel
    device: torch.device
    features: FeatureSpec
    cache_dir: Path

    def dataset(self, split: str) -> SiteDataset:
        return load_site_dataset(self.manifest, self.features, split=split, cache_dir=self.cache_dir)


def _unpack(msg: Message, context: Context) -> _Site:
    record = msg.content[keys.CONFIG]
    config = RoundConfig.from_record(record)
    manifest = read_site_manifest(context, check_files=False)
    features = FeatureSpec.from_json(config.feature_spec)
    model = build_model(ModelSpec.from_dict(json.loads(config.model_spec)))
    model.load_state_dict(msg.content[keys.ARRAYS].to_torch_state_dict())
    return _Site(manifest=manifest, config=config, server_round=int(record.get(keys.SERVER_ROUND, 0)),
                 task=make_task(config.task, num_classes=max(2, len(features.classes))), model=model,
                 device=resolve_device(config.device), features=features,
                 cache_dir=_cache_dir(context, manifest))  # fmt: skip


def _site_privacy(context: Context, site: _Site) -> SitePrivacy | None:
    """The site's DP round context (its ledger opened and checked), or None without DP."""
    settings = site.config.privacy
    if not settings.enabled:
        return None
    root = ledger_root(settings, state_dir=str(context.node_config.get("state-dir", "")),
                       run_dir=str(context.run_config.get("run-dir", "")))  # fmt: skip
    cap = context.node_config.get("privacy-budget")
    personalization = site.config.personalization
    return SitePrivacy(settings=settings, ledger=PrivacyLedger.open(root, site.manifest.site), run_id=str(context.run_id),
                       server_round=site.server_round, rounds=site.config.rounds,
                       budget_cap=None if cap is None else float(cap),
                       extra_epochs=personalization.epochs if personalization.name == "finetune" else 0.0)  # fmt: skip


def train(msg: Message, context: Context) -> Message:
    """One round of local training from the global weights; reply with the modules trained.

    Under DP a round that would pass the site's budget is refused: the reply carries a
    ``STATUS`` record and the epsilon spent, and no arrays. Under secure aggregation the
    reply is :func:`_secure_reply` instead.
    """
    secure = keys.SECURE_SCALE in msg.content[keys.CONFIG]
    if secure and not is_secure(msg):
        raise ValueError("the train config asks for a secure-aggregation reply, but the message did not come "
                         "through SecAgg+'s masking stage; refusing to send the update unmasked")  # fmt: skip
    site = _unpack(msg, context)
    start = {k: v.detach().clone() for k, v in site.model.state_dict().items()} if secure else {}
    try:
        result = personal_round(site.model, site.dataset("train"), site.task, site.config.train,
                                site.config.personalization, state_dir=site_state_dir(context, site.manifest.site),
                                seed=round_seed(site.config.seed, site.server_round, site.manifest.site),
                                device=site.device, server_round=site.server_round,
                                privacy=_site_privacy(context, site))  # fmt: skip
    except BudgetExceeded as refusal:
        log(WARNING, "round %s: %s", site.server_round, refusal)
        if secure:
            return _secure_reply(msg, site, start, sent={}, counts={},
                                 metrics={keys.EPSILON: refusal.spent, "train-refused": 1, keys.SECURE_STATUS_CODE:
                                          keys.BUDGET_REFUSAL, keys.SECURE_STATUS_REASON: str(refusal)})  # fmt: skip
        content = RecordDict({
            keys.STATUS: ConfigRecord({keys.STATUS_CODE: keys.BUDGET_REFUSAL, keys.STATUS_REASON: str(refusal)}),
            keys.METRICS: MetricRecord({keys.EPSILON: refusal.spent, "train-refused": 1}),
            keys.SITE: site_record(site.manifest),
        })  # fmt: skip
        return Message(content=content, reply_to=msg)
    if secure:
        return _secure_reply(msg, site, start, sent=result.state, counts=result.counts, metrics=result.metrics())
    content = RecordDict({keys.ARRAYS: ArrayRecord(result.state), keys.METRICS: MetricRecord(result.metrics()),
                          keys.SITE: site_record(site.manifest)})  # fmt: skip
    return Message(content=content, reply_to=msg)


def _secure_reply(msg: Message, site: _Site, start: dict[str, torch.Tensor], *, sent: dict[str, torch.Tensor],
                  counts: dict[str, int], metrics: dict[str, Any]) -> Message:
    """The legacy ``FitRes`` that ``secaggplus_mod`` masks: the weighted per-module vectors of
    :func:`client.secure_update.encode_update` and the round's figures; no plain arrays."""
    config = msg.content[keys.CONFIG]
    module_counts = {key.removeprefix(f"{keys.NUM_EXAMPLES}."): n for key, n in counts.items()
                     if key.startswith(f"{keys.NUM_EXAMPLES}.")}  # fmt: skip
    vectors = encode_update(start, sent, module_counts, scale=float(config[keys.SECURE_SCALE]),
                            clipping_range=float(config[keys.SECURE_CLIPPING_RANGE]))  # fmt: skip
    figures = {**metrics, keys.SECURE_SITE: site.manifest.site}
    fitres = FitRes(status=Status(code=Code.OK, message=""), parameters=ndarrays_to_parameters(vectors), num_examples=1,
                    metrics=figures)  # fmt: skip
    return Message(content=fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def evaluate_round(msg: Message, context: Context) -> Message:
    """Per-round figures of the global model on the split named in the config (``val``)."""
    site = _unpack(msg, context)
    split = site.config.split
    dataset = site.dataset(split)
    result = evaluate(site.model, dataset, site.task, device=site.device)
    metrics = {keys.NUM_EXAMPLES: len(dataset), **{f"{split}-{k}": float(v) for k, v in result.items()}}
    content = RecordDict({keys.METRICS: MetricRecord(metrics), keys.SITE: site_record(site.manifest)})
    return Message(content=content, reply_to=msg)


def evaluate_final(msg: Message, context: Context) -> Message:
    """Score the final global model (and this site's personalised one) on the local test split.

    The threshold is chosen on the local validation split; metrics and bootstrap intervals
    are computed here, and only those figures travel.
    """
    site = _unpack(msg, context)
    config, name = site.config, site.manifest.site
    val_set, test_set = site.dataset("val"), site.dataset("test")
    common = {"site": name, "val_set": val_set, "test_set": test_set, "task": site.task, "device": site.device,
              "n_boot": config.bootstrap, "seed": round_seed(config.seed, site.server_round, name)}  # fmt: skip
    evaluations = [evaluate_at_site(site.model, model_name="global", **common)]
    if config.personalization.name != "none":
        personal, steps, note = personal_model(site.model, site.dataset("train"), site.task, config.train,
                                               config.personalization, state_dir=site_state_dir(context, name),
                                               seed=common["seed"], device=site.device,
                                               privacy=_site_privacy(context, site), val_set=val_set)  # fmt: skip
        result = evaluate_at_site(personal, model_name="personalized", train_steps=steps, **common)
        if note:
            result = replace(result, note="; ".join(filter(None, [result.note, note])))
        evaluations.append(result)
    content = RecordDict({
        keys.EVALUATION: ConfigRecord({keys.EVALUATION_JSON: json.dumps([e.to_dict() for e in evaluations])}),
        keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: len(test_set)}),
        keys.SITE: site_record(site.manifest),
    })  # fmt: skip
    return Message(content=content, reply_to=msg)
