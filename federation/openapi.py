"""The OpenAPI 3.1 document of the federation's HTTP API — every route, in one place.

`OPERATIONS` lists each method and path with the role it needs (`x-streamql-role`: public,
device, read, deploy or admin), what it takes and what it answers. A test checks that the app's
routes and this list agree, route by route and role by role, so a new route starts here: fill in
its operation, then write its handler in `federation/routes/`.
"""
from __future__ import annotations

from typing import Any

import streamql
from federation.schema import TARGET_STATES

ERROR = {"$ref": "#/components/schemas/Error"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    words = {400: "Bad input (with the position when it is in a statement)", 401: "Missing or unknown token",
             403: "The token's role does not allow this", 404: "Not found", 409: "Already exists",
             406: "Neither NDJSON nor msgpack is acceptable to the client", 413: "Request body too large",
             408: "The request body did not arrive in time (the connection is closed)",
             429: "Over the token's request rate or concurrency, or too many uploads at once (see Retry-After)",
             501: "Not available on this federation"}
    return {str(s): _json(ERROR, words[s]) for s in statuses}


AUTH_ERRORS = (401, 403, 429)  # every route with a token may also be over its limits
ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
VIEW_PARAMS = [   # the fleet views' filters (federation/fleet_views.py)
    {"name": "where", "in": "query", "schema": {"type": "string"},
     "description": "a StreamQL predicate on `Edge e` answered by the registry (no `@`), e.g. "
                    "region(e) in ('US', 'EU') and online(e); errors point into this text"},
    {"name": "q", "in": "query", "schema": {"type": "string"},
     "description": "words, each found in the id, metadata, models or signals"},
    {"name": "status", "in": "query", "schema": {"enum": ["online", "offline", "missing"]}},
    {"name": "missing_after", "in": "query", "schema": {"type": "number"},
     "description": "minutes offline after which a device counts as missing (60)"},
    {"name": "model", "in": "query", "schema": {"type": "string"}},
    {"name": "version", "in": "query", "schema": {"type": "string"}},
    {"name": "battery_below", "in": "query", "schema": {"type": "number"}},
    {"name": "cpu_above", "in": "query", "schema": {"type": "number"}},
    {"name": "memory_above", "in": "query", "schema": {"type": "number"}, "description": "KiB"},
    {"name": "attention", "in": "query", "schema": {"type": "string"},
     "description": "any, low battery, errors, restarts, buffer drops or dropped link"},
]

OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "/v1/query": {
        "post": {
            "summary": "Run one statement; rows stream back as NDJSON (or msgpack), then each device's outcome",
            "description": "Columns, types and the result kind come in the response headers X-StreamQL-Columns, "
                           "X-StreamQL-Types (JSON arrays) and X-StreamQL-Kind (and X-StreamQL-Deployment for a "
                           "deploy, rollback or undeploy). The body has one JSON array per row with exactly the "
                           'selected columns, then a last line {"status": {device: {outcome, rows, reason}}, '
                           '"rows": n, "message"?, "deployment_id"?}; an error while rows stream makes the last '
                           'line {"error": {kind, message, line, column}, "status": …, "rows": n}. With '
                           "Accept: application/x-msgpack the same values come as concatenated msgpack objects "
                           "(streamql.codec: arrays, times and records keep their types). Closing the connection "
                           "cancels the statement. Deploy, rollback and undeploy need the deploy role.",
            "tags": ["query"], "x-streamql-role": "read",
            "parameters": [{"name": "Accept", "in": "header", "schema": {
                "enum": ["application/x-ndjson", "application/x-msgpack", "application/json", "*/*"]}}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("QueryRequest")},
                "text/plain": {"schema": {"type": "string", "description": "the statement itself"}}}},
            "responses": {
                "200": {"description": "One JSON array per row with exactly the selected columns, then a last "
                                       'line {"status": {…}, "rows": n} with each device\'s outcome',
                        "headers": {name: {"schema": {"type": "string"}} for name in (
                            "X-StreamQL-Columns", "X-StreamQL-Types", "X-StreamQL-Kind", "X-StreamQL-Deployment")},
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                                    "application/x-msgpack": {"schema": {"type": "string", "format": "binary"}}}},
                **_errors(400, *AUTH_ERRORS, 406, 408, 413, 501)},
        },
    },
    "/v1/query/ws": {
        "get": {
            "summary": "WebSocket: submit statements, stream their rows, cancel them",
            "description": 'Client messages: {"type": "query", "id", "query", "limits"?} and {"type": "cancel", '
                           '"id"}. Federation messages per id: {"type": "columns", "columns", "types", "kind"}, '
                           '{"type": "rows", "rows": [[…], …]}, then {"type": "end", "status", "rows"} or '
                           '{"type": "error", "error", "status"?} or {"type": "cancelled", "status", "rows"}. '
                           "JSON text messages, or msgpack binary ones with ?format=msgpack. Browsers, which "
                           "cannot set headers on a WebSocket, may pass the token as ?access_token=.",
            "tags": ["query"], "x-streamql-role": "read",
            "parameters": [{"name": "format", "in": "query", "schema": {"enum": ["json", "msgpack"]}}],
            "responses": {"101": {"description": "Switching to the WebSocket protocol"},
                          **_errors(400, *AUTH_ERRORS, 501)},
        },
    },
    "/v1/edges": {
        "get": {
            "summary": "Devices with metadata, status, health and deployed model versions",
            "tags": ["edges"], "x-streamql-role": "read",
            "parameters": [
                {"name": "online", "in": "query", "schema": {"type": "boolean"}},
                {"name": "id", "in": "query", "schema": {"type": "string"}, "description": "repeatable"},
                {"name": "meta.{key}", "in": "query", "schema": {"type": "string"},
                 "description": "metadata key equals the value (repeat the parameter for `in`)"},
                {"name": "capability.{key}", "in": "query", "schema": {"type": "string"},
                 "description": "capability equals the value (repeatable)"},
                *VIEW_PARAMS,
                {"name": "sort", "in": "query", "schema": {"type": "string"},
                 "description": "id, status, last_seen, battery, cpu, memory, uptime, restarts, attention or "
                                "meta.<key>; `-` first for descending; devices without a value last"},
                {"name": "fields", "in": "query", "schema": {"enum": ["full", "compact"]},
                 "description": "compact: what a row of the dashboard shows"},
                {"name": "since", "in": "query", "schema": {"type": "integer"},
                 "description": "a `cursor` from an earlier answer: only the page's devices changed after it, "
                                "and `ids`, the page in order"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 10000}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
            ],
            "responses": {"200": _json(_ref("EdgeList")), **_errors(400, *AUTH_ERRORS)},
        },
        "post": {
            "summary": "Provision a device: id, metadata and capabilities → its token (shown once)",
            "tags": ["edges"], "x-streamql-role": "admin",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ProvisionRequest")}}},
            "responses": {"201": _json(_ref("Provisioned"), "Provisioned"),
                          **_errors(400, *AUTH_ERRORS, 408, 409, 413)},
        },
    },
    "/v1/edges/summary": {
        "get": {
            "summary": "Counts of the devices the filters select: by status, metadata key and value, model "
                       "version, attention reason",
            "tags": ["edges"], "x-streamql-role": "read",
            "parameters": [{"name": "online", "in": "query", "schema": {"type": "boolean"}}, *VIEW_PARAMS],
            "responses": {"200": _json({"type": "object", "properties": {
                "total": {"type": "integer"}, "status": {"type": "object"}, "metadata": {"type": "object"},
                "metadata_keys": {"type": "object"}, "models": {"type": "object"}, "attention": {"type": "object"},
                "needing_attention": {"type": "integer"}, "cursor": {"type": "integer"}}}),
                **_errors(400, *AUTH_ERRORS)},
        },
    },
    "/v1/edges/connect": {
        "get": {
            "summary": "WebSocket used by edge engines (device token): announce, heartbeats, fragments, results",
            "description": "docs/protocol.md: binary msgpack frames of streamql.wire (at most 16 MiB each). The "
                           "token must belong to the device the hello names (else welcome {accepted: false} "
                           "and close 4003).",
            "tags": ["edges"], "x-streamql-role": "device",
            "responses": {"101": {"description": "Switching to the WebSocket protocol"},
                          **_errors(400, *AUTH_ERRORS)},
        },
    },
    "/v1/edges/{id}": {
        "get": {
            "summary": "One device", "tags": ["edges"], "x-streamql-role": "read", "parameters": [ID_PARAM],
            "responses": {"200": _json(_ref("Edge")), **_errors(*AUTH_ERRORS, 404)},
        },
        "delete": {
            "summary": "Forget a device, its tokens, targets and model versions", "tags": ["edges"],
            "x-streamql-role": "admin", "parameters": [ID_PARAM],
            "responses": {"200": _json({"type": "object", "properties": {"deleted": {"type": "string"}}}),
                          **_errors(*AUTH_ERRORS, 404)},
        },
    },
    "/v1/me": {
        "get": {
            "summary": "The caller's token: its role, id, label and what it may do",
            "tags": ["tokens"], "x-streamql-role": "read",
            "responses": {"200": _json({"type": "object", "properties": {
                "role": {"type": "string"}, "token_id": {"type": ["integer", "null"]},
                "label": {"type": ["string", "null"]}, "may": {"type": "object"}}}), **_errors(*AUTH_ERRORS)},
        },
    },
    "/v1/saved-queries": {
        "get": {
            "summary": "Saved queries, by name", "tags": ["queries"], "x-streamql-role": "read",
            "responses": {"200": _json({"type": "object", "properties": {
                "queries": {"type": "array", "items": _ref("SavedQuery")}}}), **_errors(*AUTH_ERRORS)},
        },
    },
    "/v1/saved-queries/{name}": {
        "get": {
            "summary": "One saved query", "tags": ["queries"], "x-streamql-role": "read",
            "parameters": [NAME_PARAM],
            "responses": {"200": _json(_ref("SavedQuery")), **_errors(400, *AUTH_ERRORS, 404)},
        },
        "put": {
            "summary": "Save a query under a name (replacing one of that name)", "tags": ["queries"],
            "x-streamql-role": "read", "parameters": [NAME_PARAM],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["text"], "properties": {
                    "text": {"type": "string"}, "description": {"type": "string"}}}}}},
            "responses": {"200": _json(_ref("SavedQuery")), "201": _json(_ref("SavedQuery"), "Saved"),
                          **_errors(400, *AUTH_ERRORS, 408, 413)},
        },
        "delete": {
            "summary": "Forget a saved query", "tags": ["queries"], "x-streamql-role": "read",
            "parameters": [NAME_PARAM],
            "responses": {"200": _json({"type": "object", "properties": {"deleted": {"type": "string"}}}),
                          **_errors(400, *AUTH_ERRORS, 404)},
        },
    },
    "/v1/tokens": {
        "get": {
            "summary": "Tokens (never their secrets)", "tags": ["tokens"], "x-streamql-role": "admin",
            "parameters": [{"name": "revoked", "in": "query", "schema": {"type": "boolean"}},
                           {"name": "devices", "in": "query", "schema": {"type": "boolean"},
                            "description": "false: leave out the devices' tokens"}],
            "responses": {"200": _json({"type": "object", "properties": {
                "tokens": {"type": "array", "items": _ref("Token")}}}), **_errors(*AUTH_ERRORS)},
        },
        "post": {
            "summary": "Create a read, deploy or admin token, or a new token for one device",
            "tags": ["tokens"], "x-streamql-role": "admin",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("TokenRequest")}}},
            "responses": {"201": _json(_ref("NewToken"), "Created"), **_errors(400, *AUTH_ERRORS, 404, 408, 413)},
        },
    },
    "/v1/tokens/{id}": {
        "delete": {
            "summary": "Revoke a token", "tags": ["tokens"], "x-streamql-role": "admin",
            "parameters": [{**ID_PARAM, "schema": {"type": "integer"}}],
            "description": "Takes effect at once: the token's open WebSockets are closed with 4003 and its "
                           "requests in flight stopped; `closed` counts them.",
            "responses": {"200": _json({"type": "object", "properties": {"revoked": {"type": "integer"},
                                                                         "closed": {"type": "integer"}}}),
                          **_errors(400, *AUTH_ERRORS, 404)},
        },
    },
    "/v1/models": {
        "get": {
            "summary": "Bundles and their versions", "tags": ["models"], "x-streamql-role": "read",
            "parameters": [{"name": "name", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object", "properties": {
                "models": {"type": "array", "items": _ref("Bundle")}}}), **_errors(*AUTH_ERRORS)},
        },
        "post": {
            "summary": "Upload a signed model bundle (one packed file), verified against the trusted keys",
            "tags": ["models"], "x-streamql-role": "deploy",
            "requestBody": {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}},
            "responses": {"201": _json(_ref("UploadedBundle"), "Stored"),
                          "200": _json(_ref("UploadedBundle"), "The same bytes were stored before"),
                          **_errors(400, *AUTH_ERRORS, 408, 409, 413)},
        },
    },
    "/v1/deployments": {
        "get": {
            "summary": "Deployments, newest first", "tags": ["deployments"], "x-streamql-role": "read",
            "parameters": [{"name": "state", "in": "query", "schema": {"type": "string"},
                            "description": "one state or several, comma-separated: running,failed"},
                           {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                           {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
            "responses": {"200": _json({"type": "object", "properties": {
                "deployments": {"type": "array", "items": _ref("Deployment")}}}), **_errors(400, *AUTH_ERRORS)},
        },
    },
    "/v1/deployments/{id}": {
        "get": {
            "summary": "Progress of one deployment: its waves, an abort, and per device pending, sending, installed, "
                       "done, skipped (why), failed (why), rolled back",
            "tags": ["deployments"], "x-streamql-role": "read",
            "parameters": [{**ID_PARAM, "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                           {"name": "wait", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 60},
                            "description": "seconds to wait for the deployment to settle (finished, or only "
                                           "offline devices pending) before answering"},
                           {"name": "device_state", "in": "query", "schema": {"type": "string"},
                            "description": "list only devices in these states (comma-separated)"},
                           {"name": "device_limit", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                           {"name": "device_offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
            "responses": {"200": _json(_ref("DeploymentProgress")), **_errors(400, *AUTH_ERRORS, 404)},
        },
    },
    "/v1/deployments/preflight": {
        "post": {
            "summary": "What a deploy, rollback or undeploy statement would do now: install, wait (offline), skip "
                       "with reasons, already there, likely to fail (refused this change before)",
            "tags": ["deployments"], "x-streamql-role": "deploy",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["statement"], "properties": {"statement": {"type": "string"}}}}}},
            "responses": {"200": _json({"type": "object", "properties": {
                "selected": {"type": "integer"}, "counts": {"type": "object"}, "skip_reasons": {"type": "object"},
                "devices": {"type": "object"}}}), **_errors(400, *AUTH_ERRORS, 404, 408, 413)},
        },
    },
    "/v1/deployments/{id}/cancel": {
        "post": {
            "summary": "Cancel a running deployment: nothing more is sent; pending devices are skipped",
            "tags": ["deployments"], "x-streamql-role": "deploy",
            "parameters": [{**ID_PARAM, "schema": {"type": "string", "pattern": "^[0-9]+$"}}],
            "responses": {"200": _json(_ref("DeploymentProgress")), **_errors(400, *AUTH_ERRORS, 404, 409)},
        },
    },
    "/v1/deployments/{id}/abort": {
        "post": {
            "summary": "Abort a running deployment, optionally rolling back the devices that switched",
            "tags": ["deployments"], "x-streamql-role": "deploy",
            "parameters": [{**ID_PARAM, "schema": {"type": "string", "pattern": "^[0-9]+$"}}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"rollback": {"type": "boolean"}}}}}},
            "responses": {"200": _json(_ref("DeploymentProgress")), **_errors(400, *AUTH_ERRORS, 404, 408, 409, 413)},
        },
    },
    "/v1/deployments/{id}/retry": {
        "post": {
            "summary": "A new deployment of the same change to the devices that failed in this one",
            "tags": ["deployments"], "x-streamql-role": "deploy",
            "parameters": [{**ID_PARAM, "schema": {"type": "string", "pattern": "^[0-9]+$"}}],
            "responses": {"201": _json({"type": "object", "properties": {"deployment_id": {"type": "string"},
                                                                         "deployment": _ref("DeploymentProgress")}}),
                          **_errors(400, *AUTH_ERRORS, 404, 409)},
        },
    },
    "/v1/deployments/{id}/rollback": {
        "post": {
            "summary": "A new rollback of the model on the devices this deployment brought its version to",
            "tags": ["deployments"], "x-streamql-role": "deploy",
            "parameters": [{**ID_PARAM, "schema": {"type": "string", "pattern": "^[0-9]+$"}}],
            "responses": {"201": _json({"type": "object", "properties": {"deployment_id": {"type": "string"},
                                                                         "deployment": _ref("DeploymentProgress")}}),
                          **_errors(400, *AUTH_ERRORS, 404, 409)},
        },
    },
    "/v1/flows": {
        "get": {
            "summary": "Flows the edges publish to (results of their autonomous queries), with counts",
            "tags": ["flows"], "x-streamql-role": "read",
            "responses": {"200": _json({"type": "object", "properties": {"flows": {
                "type": "object", "additionalProperties": {"type": "object", "properties": {
                    "records": {"type": "integer"}, "rows": {"type": "integer"},
                    "last_id": {"type": "integer"}}}}}}), **_errors(*AUTH_ERRORS)},
        },
    },
    "/v1/flows/{flow}": {
        "get": {
            "summary": "A flow's published records in order, each kept exactly once; page with after=next",
            "tags": ["flows"], "x-streamql-role": "read",
            "parameters": [{"name": "flow", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                           {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                       "maximum": 10000}},
                           {"name": "edge", "in": "query", "schema": {"type": "string"}},
                           {"name": "newest", "in": "query", "schema": {"type": "integer", "minimum": 0,
                                                                        "maximum": 10000},
                            "description": "the newest N records (oldest first)"}],
            "responses": {"200": _json({"type": "object", "properties": {
                "records": {"type": "array", "items": _ref("PublishedRecord")}, "next": {"type": "integer"}}}),
                **_errors(400, *AUTH_ERRORS)},
        },
    },
    "/v1/functions": {
        "get": {
            "summary": "Every function a statement may call: the library, the fleet functions, the functions "
                       "defined at the federation and those the edges announced",
            "tags": ["query"], "x-streamql-role": "read",
            "responses": {"200": _json({"type": "object", "properties": {"functions": {
                "type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "signature": {"type": "string"}, "kind": {"type": "string"},
                    "topic": {"type": "string"}, "doc": {"type": "string"}}}}}}), **_errors(*AUTH_ERRORS)},
        },
    },
    "/v1/openapi.json": {
        "get": {"summary": "This document", "tags": ["service"], "x-streamql-role": "read",
                "responses": {"200": _json({"type": "object"}), **_errors(*AUTH_ERRORS)}},
    },
    "/metrics": {
        "get": {"summary": "Metrics in the Prometheus text format", "tags": ["service"], "x-streamql-role": "public",
                "security": [],
                "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}},
    },
    "/healthz": {
        "get": {"summary": "Liveness: the service answers and its registry opens", "tags": ["service"],
                "x-streamql-role": "public", "security": [],
                "responses": {"200": _json({"type": "object", "properties": {"status": {"type": "string"}}})}},
    },
    "/": {
        "get": {"summary": "The dashboard: devices, a query box, live charts", "tags": ["dashboard"],
                "x-streamql-role": "public", "security": [],
                "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}},
    },
    "/static/{path}": {
        "get": {"summary": "The dashboard's static files", "tags": ["dashboard"], "x-streamql-role": "public",
                "security": [], "parameters": [{"name": "path", "in": "path", "required": True,
                                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "A file"}, "404": {"description": "Not found"}}},
    },
}

_ATTRIBUTES = {"type": "object", "additionalProperties": True, "description": "key → JSON value"}

SCHEMAS: dict[str, dict] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["kind", "message"],
        "properties": {"kind": {"type": "string"}, "message": {"type": "string"},
                       "line": {"type": ["integer", "null"]}, "column": {"type": ["integer", "null"]}}}}},
    "QueryRequest": {"type": "object", "required": ["query"], "additionalProperties": False, "properties": {
        "query": {"type": "string", "description": "one statement (ending with ;)"},
        "limits": {"type": "object", "additionalProperties": False, "description": "per-fragment limits",
                   "properties": {"rows": {"type": "integer", "minimum": 1}, "seconds": {"type": "number"},
                                  "memory_mb": {"type": "number"}}}}},
    "ModelVersion": {"type": "object", "properties": {
        "version": {"type": "string"}, "previous_version": {"type": ["string", "null"]}, "updated": {"type": "number"}}},
    "Edge": {"type": "object", "required": ["id", "metadata", "capabilities", "online"], "properties": {
        "id": {"type": "string"}, "metadata": _ATTRIBUTES, "capabilities": _ATTRIBUTES,
        "created": {"type": "number"}, "last_seen": {"type": ["number", "null"]}, "online": {"type": "boolean"},
        "health": {"type": "object"}, "restarts": {"type": "integer"},
        "models": {"type": "object", "additionalProperties": _ref("ModelVersion")}}},
    "EdgeList": {"type": "object", "properties": {
        "edges": {"type": "array", "items": _ref("Edge")}, "total": {"type": "integer"},
        "limit": {"type": "integer"}, "offset": {"type": "integer"}}},
    "ProvisionRequest": {"type": "object", "required": ["id"], "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"},
        "metadata": _ATTRIBUTES, "capabilities": _ATTRIBUTES}},
    "Provisioned": {"type": "object", "properties": {
        "id": {"type": "string"}, "token": {"type": "string", "description": "shown only this once"},
        "edge": _ref("Edge"), "config": {"type": "string", "description": "an edge.toml for the device, with "
                                                                       "its token"}}},
    "SavedQuery": {"type": "object", "properties": {
        "name": {"type": "string"}, "text": {"type": "string"}, "description": {"type": "string"},
        "created": {"type": "number"}, "updated": {"type": "number"}, "created_by": {"type": "string"}}},
    "Token": {"type": "object", "properties": {
        "id": {"type": "integer"}, "role": {"enum": ["read", "deploy", "admin", "device"]},
        "device_id": {"type": ["string", "null"]}, "label": {"type": "string"}, "created": {"type": "number"},
        "revoked": {"type": ["number", "null"]}}},
    "TokenRequest": {"type": "object", "properties": {
        "role": {"enum": ["read", "deploy", "admin"]}, "label": {"type": "string"},
        "device": {"type": "string", "description": "instead of a role: a new token for this device"}}},
    "NewToken": {"allOf": [_ref("Token"), {"type": "object", "properties": {
        "token": {"type": "string", "description": "shown only this once"}}}]},
    "Bundle": {"type": "object", "properties": {
        "name": {"type": "string"}, "version": {"type": "string"}, "sha256": {"type": "string"},
        "manifest": {"type": "object"}, "size": {"type": "integer"}, "uploaded": {"type": "number"},
        "uploader": {"type": "string"}, "requirements": {"type": "object"},
        "models": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "variants": {"type": ["array", "null"], "items": {"type": "string"}}}}}}},
    "UploadedBundle": {"allOf": [_ref("Bundle"), {"type": "object", "properties": {
        "created": {"type": "boolean"}, "signed_by": {"type": "array", "items": {"type": "string"}},
        "verified_by": {"type": ["string", "null"], "description": "the trusted key whose signature held"}}}]},
    "PublishedRecord": {"type": "object", "properties": {
        "id": {"type": "integer", "description": "position in the federation's log"}, "edge": {"type": "string"},
        "flow": {"type": "string"}, "seq": {"type": "integer", "description": "in the edge's log"},
        "n": {"type": "integer"}, "names": {"type": ["array", "null"], "items": {"type": "string"}},
        "time": {"type": ["number", "null"]}, "received": {"type": "number"},
        "dropped": {"type": "integer", "description": "records the edge dropped on overflow so far"},
        "rows": {"type": "array", "description": "plain JSON rows (a value, or an array for several columns)"}}},
    "TargetCounts": {"type": "object", "properties": {state: {"type": "integer"} for state in TARGET_STATES}},
    "Deployment": {"type": "object", "properties": {
        "id": {"type": "string"}, "action": {"enum": ["deploy", "rollback", "undeploy"]},
        "model": {"type": "string"}, "bundle": {"type": "string"}, "version": {"type": ["string", "null"]},
        "selection": {"type": "string"}, "created": {"type": "number"}, "updated": {"type": "number"},
        "state": {"enum": ["pending", "running", "done", "aborted", "failed", "cancelled"]},
        "waves": {"type": "object", "properties": {"count": {"type": "integer"}, "current": {"type": "integer"}}},
        "failure_threshold": {"type": "number"}, "created_by": {"type": "string"}, "counts": _ref("TargetCounts")}},
    "DeploymentDevice": {"type": "object", "properties": {
        "id": {"type": "string"}, "state": {"enum": list(TARGET_STATES)},
        "reason": {"type": ["string", "null"]}, "variant": {"type": ["string", "null"]},
        "wave": {"type": "integer"}, "updated": {"type": "number"}}},
    "DeploymentProgress": {"type": "object", "properties": {
        "id": {"type": "string"}, "action": {"enum": ["deploy", "rollback", "undeploy"]},
        "model": {"type": "string"}, "version": {"type": ["string", "null"]}, "selection": {"type": "string"},
        "state": {"enum": ["pending", "running", "done", "aborted", "failed", "cancelled"]},
        "created": {"type": "number"}, "updated": {"type": "number"}, "requested_by": {"type": "string"},
        "waves": {"type": "object", "description": "the rollout (docs/models.md, Rollouts)", "properties": {
            "count": {"type": "integer"}, "current": {"type": "integer"},
            "sizes": {"type": "array", "items": {"type": "integer"}}, "timeout_s": {"type": "number"},
            "rollback_on_abort": {"type": "boolean"},
            "list": {"type": "array", "items": {"type": "object", "properties": {
                "wave": {"type": "integer"}, "state": {"enum": ["waiting", "running", "done", "aborted", "skipped"]},
                "started": {"type": "number"}, "finished": {"type": "number"},
                "offline": {"type": "array", "items": {"type": "string"}},
                "failed_share": {"type": ["number", "null"]}, "devices": {"type": "integer"}}}}}},
        "abort": {"type": ["object", "null"], "properties": {
            "wave": {"type": "integer"}, "reason": {"type": "string"},
            "rollback": {"enum": [None, "running", "done"]}, "rolled_back": {"type": "integer"}}},
        "failure_threshold": {"type": "number"}, "counts": _ref("TargetCounts"),
        "waiting_for_offline": {"type": "integer", "description": "pending devices that are not connected"},
        "settled": {"type": "boolean", "description": "finished, or only waiting for offline devices"},
        "devices": {"type": "array", "items": _ref("DeploymentDevice")}}},
}


def document(server_url: str | None = None) -> dict:
    """The OpenAPI document; every operation needs the bearer token unless it says otherwise."""
    paths = {}
    for path, methods in OPERATIONS.items():
        paths[path] = {method: {"operationId": _operation_id(method, path), **op} for method, op in methods.items()}
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "StreamQL federation", "version": streamql.__version__,
                 "description": "Query and manage a fleet of edge devices. Errors are "
                                '{"error": {"kind", "message", "line", "column"}} with a 4xx status.'},
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "a token made by provisioning or POST /v1/tokens"}}},
        "security": [{"bearer": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}").replace(".", "_") for w in path.strip("/").split("/") if w and w != "v1"]
    return method + "".join(w[:1].upper() + w[1:] for w in words) if words else method + "Dashboard"


def role_of(method: str, path: str) -> str | None:
    """The role the document says a route needs, or None for an undocumented route."""
    return OPERATIONS.get(path, {}).get(method.lower(), {}).get("x-streamql-role")
