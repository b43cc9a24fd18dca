"""KEDA's custom resources are not in the Kubernetes schemas: these are JSON Schemas of their
documented fields (keda.sh/v1alpha1, KEDA 2.12+: ScaledObject, TriggerAuthentication, and the
``redis-streams`` scaler's metadata), closed to anything else, so a misspelt field fails here
rather than being ignored by the cluster."""

from __future__ import annotations

from typing import Any

import jsonschema

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253}
_COUNT = {"type": "string", "pattern": r"^[0-9]+$"}
_BOOL = {"type": "string", "enum": ["true", "false"]}
_ENV_NAME = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}

_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": _NAME,
        "namespace": _NAME,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}

# https://keda.sh/docs/latest/scalers/redis-streams/
REDIS_STREAMS = {
    "type": "object",
    "required": ["stream"],
    "properties": {
        "address": {"type": "string", "pattern": r"^[^\s:]+:[0-9]+$"},
        "host": {"type": "string"},
        "port": _COUNT,
        "addressFromEnv": _ENV_NAME,
        "hostFromEnv": _ENV_NAME,
        "portFromEnv": _ENV_NAME,
        "usernameFromEnv": _ENV_NAME,
        "passwordFromEnv": _ENV_NAME,
        "stream": {"type": "string", "minLength": 1},
        "consumerGroup": {"type": "string", "minLength": 1},
        "pendingEntriesCount": _COUNT,
        "streamLength": _COUNT,
        "lagCount": _COUNT,
        "activationLagCount": _COUNT,
        "enableTLS": _BOOL,
        "unsafeSsl": _BOOL,
        "databaseIndex": _COUNT,
    },
    "additionalProperties": False,
    # One way to reach Redis; lag needs a group to measure.
    "oneOf": [{"required": ["address"]}, {"required": ["host"]}, {"required": ["addressFromEnv"]}],
    "dependentRequired": {"lagCount": ["consumerGroup"], "pendingEntriesCount": ["consumerGroup"]},
}

_TRIGGER = {
    "type": "object",
    "required": ["type", "metadata"],
    "properties": {
        "type": {"type": "string"},
        "name": _NAME,
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "useCachedMetrics": {"type": "boolean"},
        "authenticationRef": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": _NAME,
                "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
    "if": {"properties": {"type": {"const": "redis-streams"}}},
    "then": {"properties": {"metadata": REDIS_STREAMS}},
}

_INT = {"type": "integer", "minimum": 0}

# https://keda.sh/docs/latest/reference/scaledobject-spec/
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": _NAME,
                        "envSourceContainerName": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT,
                "minReplicaCount": _INT,
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "properties": {"failureThreshold": _INT, "replicas": _INT},
                    "additionalProperties": False,
                },
                "advanced": {
                    "type": "object",
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "properties": {
                                "name": _NAME,
                                # Checked against the HorizontalPodAutoscaler schema itself.
                                "behavior": {"type": "object"},
                            },
                            "additionalProperties": False,
                        },
                    },
                    "additionalProperties": False,
                },
                "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

# https://keda.sh/docs/latest/concepts/authentication/
TRIGGER_AUTHENTICATION = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "minProperties": 1,
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": _NAME,
                            "key": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                },
                "env": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name"],
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": _ENV_NAME,
                            "containerName": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

SCHEMAS = {"ScaledObject": SCALED_OBJECT, "TriggerAuthentication": TRIGGER_AUTHENTICATION}


def validate_keda(obj: dict[str, Any]) -> None:
    """Raises ``jsonschema.ValidationError`` when ``obj`` strays from the documented fields."""
    jsonschema.Draft202012Validator(SCHEMAS[obj["kind"]]).validate(obj)
