"""The Kubernetes API resources a kmock emulator must declare for the operator: ours,
the ones it manages, and those Kopf waits for before it starts watching."""

from __future__ import annotations

import kmock

VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
RESOURCES = (
    ("ltx-training.io/v1alpha1/ltxextendtrainings", "LtxExtendTraining", True),
    ("batch/v1/jobs", "Job", True),
    ("v1/pods", "Pod", True),
    ("v1/events", "Event", True),
    ("v1/namespaces", "Namespace", False),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False),
)


def declare(emulator: kmock.KubernetesEmulator) -> None:
    for key, kind, namespaced in RESOURCES:
        emulator.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=namespaced,
                                                     verbs=VERBS, subresources={"status"})
