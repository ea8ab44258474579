"""Fake batch APIs on 127.0.0.1 (FakeGeminiBatchServer is at the end).

OpenAI's, as the `openai` SDK speaks to it: Files (`POST /v1/files` multipart,
`GET /v1/files/{id}/content`) and Batches (`POST /v1/batches`, `GET /v1/batches/{id}`,
`POST /v1/batches/{id}/cancel`), beside the online `/v1/chat/completions` of
FakeOpenAIServer (which a batch's failed lines are asked on).

A batch reports `validating` for `validating_polls` retrievals, then `in_progress` for
`progress_polls`, then ends as `outcome` says: "completed" (every line answered),
"expired" (only the first half answered), "failed" (validation failed: no output) or
"cancelled" (the provider cancelled it after answering the first half). A cancel request
is answered `cancelling`; the next retrieval says `cancelled`, with no output. Lines are answered
as the online server would (`rating_answer`), except where `line_faults` (consumed in input
order, one per line, None for a clean line) says:

    "error"      the line goes to the error file with a 500 error
    "not_json"   the answer's content is prose      "score_7"  one score is 7
    "broken"     the output line itself is not JSON  "missing"  no line at all
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import time
from typing import Any

from tests.fake_judge_servers import (
    IMAGE_TOKENS,
    FakeGeminiServer,
    FakeOpenAIServer,
    RecordedRequest,
    rating_answer,
    responses_in_prompt,
)

LINE_FAULTS = frozenset({"error", "not_json", "score_7", "broken", "missing"})
OUTCOMES = frozenset({"completed", "expired", "failed", "cancelled"})
_BATCH = re.compile(r"^/v1/batches/(?P<id>[^/]+)(?P<cancel>/cancel)?$")
_FILE_CONTENT = re.compile(r"^/v1/files/(?P<id>[^/]+)/content$")


class _BatchBehaviour:
    """What both fake batch APIs share: how a batch moves and ends, and its line faults."""

    def _batch_options(
        self,
        *,
        validating_polls: int = 1,
        progress_polls: int = 1,
        outcome: str = "completed",
        line_faults: list[str | None] | None = None,
    ) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}")
        unknown = [f for f in line_faults or [] if f is not None and f not in LINE_FAULTS]
        if unknown:
            raise ValueError(f"unknown line faults {unknown}; known: {sorted(LINE_FAULTS)}")
        self.validating_polls = validating_polls
        self.progress_polls = progress_polls
        self.outcome = outcome
        self.line_faults = list(line_faults or [])
        self.batches: dict[str, dict[str, Any]] = {}
        self._batch_lock = threading.Lock()

    def _phase(self, batch: dict[str, Any]) -> str:
        """Count a poll; "validating" or "running" while the batch has polls to go, else
        "done" (then `_answered` and the outcome decide what it says)."""
        batch["polls"] += 1
        if batch["polls"] <= self.validating_polls:
            return "validating"
        if batch["polls"] <= self.validating_polls + self.progress_polls:
            return "running"
        return "done"

    def _answered(self, requests: list[Any]) -> list[tuple[Any, str | None]]:
        """The requests the batch answers (all, or the first half of an expired or
        provider-cancelled one), each with its line fault."""
        answered = requests if self.outcome == "completed" else requests[: len(requests) // 2]
        return [(r, self.line_faults.pop(0) if self.line_faults else None) for r in answered]

    def _answer(self, number: int, body: Any, fault: str | None) -> Any:
        """The response body the online route would give `body` (the same scores)."""
        prompt, images = self._content_of(body)  # type: ignore[attr-defined]
        answer = rating_answer(responses_in_prompt(prompt), fault)
        record = RecordedRequest(number, "POST", "batch", {}, body)
        record.usage = (
            max(1, len(prompt) // 4) + IMAGE_TOKENS * len(images),
            max(1, len(answer) // 4),
        )
        return self._success(record, answer, blocked=False)  # type: ignore[attr-defined]


BATCH_OPTIONS = ("validating_polls", "progress_polls", "outcome", "line_faults")


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    batch = {k: options.pop(k) for k in BATCH_OPTIONS if k in options}
    return batch, options


class FakeOpenAIBatchServer(FakeOpenAIServer, _BatchBehaviour):
    def __init__(self, **options: Any) -> None:
        batch, online = _split(options)
        super().__init__(**online)
        self._batch_options(**batch)
        self.files: dict[str, bytes] = {}

    # -- routing -----------------------------------------------------------------------

    def _handle(self, handler: Any) -> None:
        path = handler.path.split("?", 1)[0]
        method = handler.command
        if path == "/v1/chat/completions":
            super()._handle(handler)
            return
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self._batch_lock:
            self.calls += 1
            self.requests.append(
                RecordedRequest(self.calls, method, handler.path, {}, None, status=200)
            )
        if method == "POST" and path == "/v1/files":
            self._send_json(handler, 200, self._upload(handler.headers, raw))
        elif method == "POST" and path == "/v1/batches":
            self._send_json(handler, 200, self._create(json.loads(raw)))
        elif (match := _BATCH.match(path)) and match.group("id") in self.batches:
            batch = self.batches[match.group("id")]
            if match.group("cancel") and method == "POST":
                batch["cancel_requested"] = True
                batch["status"] = "cancelling"
                self._send_json(handler, 200, self._public(batch))
            else:
                self._send_json(handler, 200, self._public(self._advance(batch)))
        elif (match := _FILE_CONTENT.match(path)) and match.group("id") in self.files:
            data = self.files[match.group("id")]
            handler.send_response(200)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        else:
            self._send_error(handler, 404, secret=None, message=f"no route for {path}")

    # -- files -------------------------------------------------------------------------

    def _upload(self, headers: Any, raw: bytes) -> dict[str, Any]:
        head = f"Content-Type: {headers.get('Content-Type')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        fields = {
            part.get_param("name", header="content-disposition"): part
            for part in message.iter_parts()
        }
        data = fields["file"].get_payload(decode=True)
        purpose = fields["purpose"].get_payload(decode=True).decode()
        return self._store(data, filename="ratings.jsonl", purpose=purpose)

    def _store(self, data: bytes, *, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-fake{len(self.files) + 1}"
        self.files[file_id] = data
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }

    # -- batches -----------------------------------------------------------------------

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"batch_fake{len(self.batches) + 1}"
        lines = [json.loads(x) for x in self.files[body["input_file_id"]].splitlines() if x]
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "created_at": int(time.time()),
            "status": "validating",
            "polls": 0,
            "lines": lines,
            "output_file_id": None,
            "error_file_id": None,
            "errors": None,
        }
        self.batches[batch_id] = batch
        return self._public(batch)

    def _public(self, batch: dict[str, Any]) -> dict[str, Any]:
        total = len(batch["lines"])
        done = batch.get("answered", 0)
        failed = batch.get("failed", 0)
        return {
            **{
                k: v
                for k, v in batch.items()
                if k not in ("polls", "lines", "answered", "failed", "cancel_requested")
            },
            "request_counts": {"total": total, "completed": done, "failed": failed},
        }

    def _advance(self, batch: dict[str, Any]) -> dict[str, Any]:
        if batch["status"] in OUTCOMES:
            return batch
        if batch.get("cancel_requested"):
            batch["status"] = "cancelled"  # the cancel call itself answered "cancelling"
            return batch
        phase = self._phase(batch)
        if phase == "done":
            self._finish(batch)
        else:
            batch["status"] = {"validating": "validating", "running": "in_progress"}[phase]
        return batch

    def _finish(self, batch: dict[str, Any]) -> None:
        if self.outcome == "failed":
            batch["status"] = "failed"
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": "the input file is invalid"}],
            }
            return
        output, errors = [], []
        for line, fault in self._answered(batch["lines"]):
            if fault == "missing":
                continue
            if fault == "broken":
                output.append('{"custom_id": "' + line["custom_id"] + '", "respo')
                continue
            number = len(output) + len(errors) + 1
            if fault == "error":
                errors.append(
                    json.dumps(
                        {
                            "id": f"batch_req_{number}",
                            "custom_id": line["custom_id"],
                            "response": {
                                "status_code": 500,
                                "request_id": f"req_{number}",
                                "body": {
                                    "error": {"message": "server error", "type": "server_error"}
                                },
                            },
                            "error": None,
                        }
                    )
                )
                continue
            output.append(
                json.dumps(
                    {
                        "id": f"batch_req_{number}",
                        "custom_id": line["custom_id"],
                        "response": {
                            "status_code": 200,
                            "request_id": f"req_{number}",
                            "body": self._answer(number, line["body"], fault),
                        },
                        "error": None,
                    }
                )
            )
        batch["answered"] = len(output)
        batch["failed"] = len(errors)
        if output:
            batch["output_file_id"] = self._store(
                ("\n".join(output) + "\n").encode(), filename="output.jsonl", purpose="batch_output"
            )["id"]
        if errors:
            batch["error_file_id"] = self._store(
                ("\n".join(errors) + "\n").encode(), filename="errors.jsonl", purpose="batch_output"
            )["id"]
        batch["status"] = self.outcome  # completed, expired, or cancelled by the provider


class FakeGeminiBatchServer(FakeGeminiServer, _BatchBehaviour):
    """Gemini's Batch Mode as google-genai speaks it, beside the online generateContent:
    `POST /{version}/models/{model}:batchGenerateContent` (inline requests), then
    `GET /{version}/batches/{id}` and `POST /{version}/batches/{id}:cancel`. The batch moves
    and ends as FakeOpenAIBatchServer's does (the same options); its answers come back
    inline, each with its request's metadata, a failed one as an `error` entry. A "broken"
    line fault is a missing answer here (there is no file to break)."""

    _CREATE = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^/:]+):batchGenerateContent$")
    _GET = re.compile(r"^/(?P<version>[^/]+)/batches/(?P<id>[^/:]+)(?P<cancel>:cancel)?$")

    def __init__(self, **options: Any) -> None:
        batch, online = _split(options)
        super().__init__(**online)
        self._batch_options(**batch)

    def _handle(self, handler: Any) -> None:
        path = handler.path.split("?", 1)[0]
        create, get = self._CREATE.match(path), self._GET.match(path)
        if not create and not get:
            super()._handle(handler)
            return
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self._batch_lock:
            self.calls += 1
            self.requests.append(
                RecordedRequest(self.calls, handler.command, handler.path, {}, None, status=200)
            )
        if create and handler.command == "POST":
            self._send_json(handler, 200, self._create(create.group("model"), json.loads(raw)))
        elif get and get.group("id") in self.batches:
            batch = self.batches[get.group("id")]
            if get.group("cancel"):
                batch["cancel_requested"] = True
                self._send_json(handler, 200, {})
            else:
                self._send_json(handler, 200, self._public(self._advance(batch)))
        else:
            self._send_error(handler, 404, secret=None, message=f"no batch at {path}")

    def _create(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"fake{len(self.batches) + 1}"
        spec = body["batch"]
        batch = {
            "id": batch_id,
            "model": f"models/{model}",
            "displayName": spec.get("displayName", ""),
            "requests": spec["inputConfig"]["requests"]["requests"],
            "state": "BATCH_STATE_PENDING",
            "polls": 0,
            "output": None,
        }
        self.batches[batch_id] = batch
        return self._public(batch)

    def _public(self, batch: dict[str, Any]) -> dict[str, Any]:
        metadata = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "model": batch["model"],
            "displayName": batch["displayName"],
            "state": batch["state"],
            "createTime": "2026-12-07T00:00:00Z",
        }
        if batch["output"] is not None:
            metadata["output"] = batch["output"]
        return {"name": f"batches/{batch['id']}", "metadata": metadata}

    def _advance(self, batch: dict[str, Any]) -> dict[str, Any]:
        done = {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED"}
        if batch["state"] in done | {"BATCH_STATE_EXPIRED"}:
            return batch
        if batch.get("cancel_requested"):
            batch["state"] = "BATCH_STATE_CANCELLED"
            return batch
        phase = self._phase(batch)
        if phase == "done":
            self._finish(batch)
        else:
            batch["state"] = {
                "validating": "BATCH_STATE_PENDING",
                "running": "BATCH_STATE_RUNNING",
            }[phase]
        return batch

    def _finish(self, batch: dict[str, Any]) -> None:
        states = {
            "completed": "BATCH_STATE_SUCCEEDED",
            "expired": "BATCH_STATE_EXPIRED",
            "failed": "BATCH_STATE_FAILED",
            "cancelled": "BATCH_STATE_CANCELLED",
        }
        batch["state"] = states[self.outcome]
        if self.outcome == "failed":
            return
        answers = []
        for n, (entry, fault) in enumerate(self._answered(batch["requests"]), start=1):
            if fault in ("missing", "broken"):
                continue
            if fault == "error":
                answers.append(
                    {"error": {"code": 13, "message": "internal"}, "metadata": entry["metadata"]}
                )
                continue
            answers.append(
                {
                    "response": self._answer(n, entry["request"], fault),
                    "metadata": entry["metadata"],
                }
            )
        batch["output"] = {"inlinedResponses": {"inlinedResponses": answers}}
