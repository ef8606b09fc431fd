"""The prepare stage: the dataset fetched, checked, fitted and captioned
(`dataset.prepare_dataset`), then uploaded to the run's folder for the train stage."""

from __future__ import annotations

from ltx_contract.manifest import Manifest
from ltx_contract.outcomes import ExitCode
from ltx_contract.result import JobResult

from ..dataset import PrepareSettings, prepare_dataset
from .context import JobContext
from .results import publish


def prepare(ctx: JobContext) -> JobResult:
    ctx.progress.stage("preparing")
    work = ctx.work_dir / "prepare"
    prepare_dataset(ctx.spec, work, PrepareSettings(fetch=ctx.fetch))
    manifest = Manifest.read(work / "dataset")
    ctx.progress.stage("uploading")
    ctx.store.put_tree(work / "dataset", f"{ctx.run}/dataset")
    result = JobResult(stage="prepare", outcome="Succeeded", reason="DatasetReady",
                       message=f"{len(manifest.samples)} training samples and "
                       f"{len(manifest.validation)} validation clips ready",
                       exit_code=int(ExitCode.SUCCESS), samples=len(manifest.samples),
                       uncaptioned_samples=manifest.uncaptioned_samples)
    if ctx.spec.debug_dataset:
        publish(ctx, result, "debug_dataset", work / "debug_dataset.zip", "debug_dataset.zip")
    return result
