"""The statistics query at a site: validate the manifest (its files included) and reply with
the counts and sums of the training split. Nothing here imports torch, MONAI or
scikit-learn, so a site answers the statistics round before its training stack has loaded.

Node facts come from ``node_config`` (see :mod:`client.handlers`): ``manifest``, or in
simulation the ``partition-id``-th CSV of ``run_config["sites-dir"]``; ``val-fraction`` and
``test-fraction`` where the manifest has no split column.
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict

from client import messages as keys
from client.features import site_statistics
from client.manifest import Manifest, read_manifest
from client.schema import Schema
from client.splits import with_site_splits

__all__ = ["query", "read_site_manifest", "site_manifest_path", "site_record"]


def site_manifest_path(context: Context) -> Path:
    """This node's manifest: ``node_config["manifest"]``, or in simulation the
    ``partition-id``-th CSV of ``run_config["sites-dir"]``."""
    if "manifest" in context.node_config:
        return Path(str(context.node_config["manifest"]))
    sites_dir = Path(str(context.run_config.get("sites-dir", "")))
    manifests = sorted(sites_dir.glob("*.csv"))
    partition = int(context.node_config.get("partition-id", -1))
    if not 0 <= partition < len(manifests):
        raise ValueError(
            f"node has no 'manifest' in its node config and partition-id {partition} does not pick one of "
            f"the {len(manifests)} manifests in sites-dir {sites_dir!s}"
        )
    return manifests[partition]


def read_site_manifest(context: Context, *, check_files: bool) -> Manifest:
    """This node's manifest, read and validated (``check_files``: open every file it names),
    with the site's own splits where it has no split column."""
    path = site_manifest_path(context)
    schema_path = path.parent / "schema.yaml"
    schema = Schema.load(schema_path) if schema_path.is_file() else None
    manifest = read_manifest(path, schema=schema, check_files=check_files)
    # without a split column the site splits itself, the same way in every process
    return with_site_splits(manifest, val_fraction=float(context.node_config.get("val-fraction", 0.15)),
                            test_fraction=float(context.node_config.get("test-fraction", 0.2)))


def site_record(manifest: Manifest) -> ConfigRecord:
    """The record that names the replying site."""
    return ConfigRecord({keys.SITE_NAME: manifest.site})


def query(msg: Message, context: Context) -> Message:
    """Validate the manifest (files included) and reply with counts and sums of the training split."""
    manifest = read_site_manifest(context, check_files=True)
    stats = site_statistics(manifest)
    stats["schema"] = manifest.schema.to_dict()
    stats["warnings"] = list(manifest.warnings)
    content = RecordDict({keys.STATISTICS: ConfigRecord({keys.STATISTICS_JSON: json.dumps(stats)}),
                          keys.SITE: site_record(manifest)})  # fmt: skip
    return Message(content=content, reply_to=msg)
