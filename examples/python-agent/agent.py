#!/usr/bin/env python3
"""A minimal membrane agent in plain Python: the agent API end to end, no dependencies.

Copy this file and replace the steps in run() (under "The agent") with what your agent
does. It shows:

  1. finding the node: `--data-dir DIR` (reads DIR/node.json and DIR/api-token), or the
     environment variables MEMBRANE_API and MEMBRANE_TOKEN, which override the data dir;
  2. calling a verb: `POST /v1/<verb>` with a JSON body and `Authorization: Bearer <token>`;
     an error is a 4xx/5xx answer with the body {"error": "<code>", "message": "..."};
  3. following the node's events as Server-Sent Events (`GET /v1/events`) in a background
     thread, parsed line by line, resuming with `Last-Event-ID` after a dropped connection;
  4. register, expose, search and query.

It exits 0 once the events of its own exposes have come back on the stream (or when
--follow-seconds runs out), and non-zero with the API's message on any API error.

Example:
  python3 agent.py --data-dir ./alice --name researcher \\
      --capability 'fact_check=Checks claims against sources' \\
      --expose 'notes.sea_level=3.7 mm/yr since 2006 (IPCC AR6)' --tier public \\
      --search 'sea level' --query 'notes.**' --json-summary

See docs/api.md for every verb and field.
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

# How long one HTTP call may take.
CALL_TIMEOUT_S = 30
# The node sends a keep-alive comment on the event stream every 15 s; a stream silent for
# longer than this is taken as dead and reopened.
STREAM_IDLE_TIMEOUT_S = 45
# Reconnection attempts in a row before the follower gives up.
STREAM_RETRIES = 5

# Output from the main thread and the follower thread must not interleave mid-line.
_print_lock = threading.Lock()


def say(text=""):
    """Prints one line of the agent's readable output (stdout), at once."""
    with _print_lock:
        print(text, flush=True)


def warn(text):
    """Prints a diagnostic line on stderr."""
    with _print_lock:
        print(text, file=sys.stderr, flush=True)


def short(text, n=8):
    """The first n characters of an id, as the CLI shows them."""
    return (text or "")[:n]


def short_peer(peer):
    """The last 8 characters of a peer id (they all start with 12D3KooW)."""
    return (peer or "")[-8:]


# ---------------------------------------------------------------------------------------
# Talking to the node
# ---------------------------------------------------------------------------------------


class ApiError(Exception):
    """The API answered with an error: HTTP status, stable code, human message."""

    def __init__(self, status, code, message):
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.message = message


class Unreachable(Exception):
    """The node could not be reached at all (not running, wrong address)."""


class NotFound(Exception):
    """No node to talk to: no data dir given, no node.json or api-token in it."""


class Node:
    """A client of one membrane node's local API."""

    def __init__(self, api, token):
        # MEMBRANE_API may be "127.0.0.1:7420" or a URL.
        api = api.strip().rstrip("/")
        self.base = api if api.startswith(("http://", "https://")) else "http://" + api
        self.token = token.strip()
        # The API is on loopback: never send it (and its token) through an HTTP proxy
        # named by http_proxy/HTTP_PROXY, which urllib would otherwise honour.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _request(self, method, path, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        return request

    def _open(self, request, timeout):
        """Sends a request; turns failures into ApiError or Unreachable."""
        try:
            return self.opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            # Every API error carries {"error": code, "message": text}.
            raw = e.read()
            try:
                body = json.loads(raw)
                raise ApiError(e.code, body.get("error", "?"), body.get("message", "")) from None
            except (ValueError, AttributeError):
                text = raw.decode("utf-8", "replace").strip()
                raise ApiError(e.code, "http_error", text or e.reason) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(
                f"cannot reach the membrane node at {self.base}: {reason} "
                "(is `membrane node` running? point at it with --data-dir or MEMBRANE_API)"
            ) from None

    def call(self, verb, body=None):
        """POST /v1/<verb> with a JSON body; returns the decoded answer."""
        request = self._request("POST", "/v1/" + verb, body if body is not None else {})
        with self._open(request, CALL_TIMEOUT_S) as response:
            return json.loads(response.read())

    def open_events(self, since, patterns):
        """Opens GET /v1/events, the Server-Sent Event stream; returns the open response.

        `since` is the last sequence number already seen: it goes out as the header
        Last-Event-ID, which the node honours (as a browser's EventSource would send it on
        reconnection); the query parameter `since=N` would do the same. Read the answer
        with parse_sse(); it ends when the node closes the stream.
        """
        query = urllib.parse.urlencode([("pattern", p) for p in patterns])
        request = self._request(
            "GET",
            "/v1/events" + ("?" + query if query else ""),
            headers={"Accept": "text/event-stream", "Last-Event-ID": str(since)},
        )
        return self._open(request, STREAM_IDLE_TIMEOUT_S)


def parse_sse(lines):
    """Parses a text/event-stream, line by line, into the JSON of each event's data.

    The format (https://html.spec.whatwg.org/multipage/server-sent-events.html):
      id: 42                      <- the event's sequence number
      event: arrived              <- its type
      data: {"seq": 42, ...}      <- the event as JSON (data lines join with "\\n")
      <blank line>                <- ends the event
      :                           <- a comment: the node's keep-alive; ignore it
    """
    data = []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line == "":
            # A blank line dispatches the event gathered so far (if it had data).
            if data:
                yield json.loads("\n".join(data))
            data = []
            continue
        if line.startswith(":"):
            continue  # keep-alive comment
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        # "id" and "event" repeat the JSON's seq and type; "retry" is for browsers.


def locate(args):
    """The node's API address and token: MEMBRANE_API / MEMBRANE_TOKEN, else the data dir."""
    api = os.environ.get("MEMBRANE_API")
    token = os.environ.get("MEMBRANE_TOKEN")
    data_dir = args.data_dir or os.environ.get("MEMBRANE_DATA_DIR")
    if (api is None or token is None) and not data_dir:
        raise NotFound(
            "no node given: pass --data-dir DIR (the node's --data-dir), "
            "or set MEMBRANE_API and MEMBRANE_TOKEN"
        )
    if api is None:
        # node.json exists while the node runs; it names the API's address.
        path = os.path.join(data_dir, "node.json")
        try:
            with open(path, encoding="utf-8") as f:
                api = json.load(f).get("api") or ""
        except (OSError, ValueError) as e:
            raise NotFound(
                f"no running node found in {data_dir} ({e}); start one with "
                f"`membrane node --data-dir {data_dir}`, or set MEMBRANE_API"
            ) from None
        if not api:
            raise NotFound(f"{path} names no API address")
    if token is None:
        # The node writes api-token on first start, readable by its owner only (mode 0600).
        path = os.path.join(data_dir, "api-token")
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise NotFound(f"cannot read the API token: {e} (or set MEMBRANE_TOKEN)") from None
    return Node(api, token)


# ---------------------------------------------------------------------------------------
# Following events in the background
# ---------------------------------------------------------------------------------------


def describe_event(e):
    """One event as a readable line, like `membrane events` prints it."""
    line = f"event #{e.get('seq')} {e.get('type')} in {e.get('space')}"
    if e.get("key"):
        line += f" {e['key']}"
    if e.get("id"):
        line += f" [{short(e['id'])}]"
    if e.get("tier"):
        line += f" {e['tier']}"
    if e.get("from"):
        line += f" from …{short_peer(e['from'])}"
    if e.get("about"):
        line += " about " + ",".join("…" + short_peer(p) for p in e["about"])
    if e.get("text"):
        line += f": {e['text']}"
    return line


class Follower(threading.Thread):
    """Follows the event stream, remembers what it saw, and lets the main thread wait."""

    def __init__(self, node, since, patterns):
        super().__init__(name="membrane-events", daemon=True)
        self.node = node
        self.last_seq = since  # resume point: the last event seen
        self.patterns = patterns
        self.changed = threading.Condition()
        self.connected = False
        self.error = None  # a fatal ApiError / Unreachable, for the main thread
        self.ids_seen = set()  # ids of the entries and records the events named
        self.types_seen = set()
        self.count = 0

    def run(self):
        failures = 0
        while True:
            try:
                with self.node.open_events(self.last_seq, self.patterns) as response:
                    self._connected()  # the node accepted the stream: events flow from here
                    for event in parse_sse(response):
                        failures = 0
                        self._seen(event)
                # The node closed the stream (shutting down?): reconnect below.
            except ApiError as e:
                # The node refused the stream (bad token, bad pattern): retrying won't help.
                self._fail(e)
                return
            except (Unreachable, OSError, http.client.HTTPException, ValueError) as e:
                # Dropped connection, a stream silent past STREAM_IDLE_TIMEOUT_S
                # (socket.timeout is an OSError), a truncated chunk: reconnect and resume.
                failures += 1
                if failures > STREAM_RETRIES:
                    self._fail(Unreachable(f"event stream lost: {e}"))
                    return
                warn(f"event stream interrupted ({e}); resuming after #{self.last_seq}")
            else:
                failures += 1
                if failures > STREAM_RETRIES:
                    self._fail(Unreachable("the node keeps closing the event stream"))
                    return
            time.sleep(0.5 * failures)  # back off a little before reconnecting

    def _connected(self):
        if not self.connected:
            with self.changed:
                self.connected = True
                self.changed.notify_all()

    def _seen(self, event):
        say(describe_event(event))
        with self.changed:
            self.last_seq = max(self.last_seq, int(event.get("seq", 0)))
            self.count += 1
            self.types_seen.add(event.get("type", "?"))
            if event.get("id"):
                self.ids_seen.add(event["id"])
            self.changed.notify_all()

    def _fail(self, error):
        with self.changed:
            self.error = error
            self.changed.notify_all()

    def wait_for(self, predicate, timeout_s):
        """Waits until predicate() holds or a fatal error; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while not predicate():
                if self.error is not None:
                    raise self.error
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
            return True

    def record(self, summary):
        """Copies what the follower saw into the summary."""
        with self.changed:
            summary["events_seen"] = self.count
            summary["event_types"] = sorted(self.types_seen)


# ---------------------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------------------


def key_value(text):
    """`KEY=VALUE` → (KEY, VALUE), for --expose."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. notes.x=hello")
    return key.strip(), value


def capability(text):
    """`name=description` → {"name", "description"}, for --capability."""
    name, _, description = text.partition("=")
    if not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected name=description")
    return {"name": name.strip(), "description": description.strip()}


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="A minimal membrane agent: register, expose, search, query, follow events.",
        epilog="The node is found with --data-dir, or MEMBRANE_API and MEMBRANE_TOKEN "
        "(which take precedence). See docs/api.md.",
    )
    p.add_argument("--data-dir", help="the node's data directory (holds node.json, api-token)")
    p.add_argument("--name", default="python-agent", help="agent name peers see")
    p.add_argument(
        "--capability", action="append", type=capability, default=[],
        metavar="NAME=DESCRIPTION", help="a capability to register (repeatable)",
    )
    p.add_argument(
        "--expose", action="append", type=key_value, default=[],
        metavar="KEY=VALUE", help="an entry to write (repeatable)",
    )
    p.add_argument(
        "--tier", choices=["private", "trusted", "public"],
        help="tier of the exposed entries [default: the node's, private]",
    )
    p.add_argument("--space", help="space to work in [default: the node's home space]")
    p.add_argument("--search", metavar="TEXT", help="free-text search to run")
    p.add_argument("--max-tokens", type=int, help="token budget of the search answer")
    p.add_argument("--query", metavar="PATTERN", help="key pattern to query, e.g. 'notes.**'")
    p.add_argument(
        "--pattern", action="append", default=[],
        help="only follow events whose key matches (repeatable; keyless events always pass). "
        "Exposes outside these patterns are never confirmed.",
    )
    p.add_argument(
        "--follow-seconds", type=float, default=30.0,
        help="how long to follow events: at most this long waiting for the events of "
        "our own exposes, or this long in all if there are none [default: 30]",
    )
    p.add_argument(
        "--json-summary", action="store_true",
        help="print one final JSON line summarizing what happened",
    )
    return p.parse_args(argv)


def print_summary(summary):
    """The --json-summary line: one JSON object, last line of stdout."""
    summary["exposed_ids"] = [x["id"] for x in summary["exposed"]]
    say(json.dumps(summary, sort_keys=True))


def run(args, summary):
    node = locate(args)
    space = {"space": args.space} if args.space else {}

    # Who is the node, and where does its event log stand? Following from last_event means
    # we see every event from now on (our own exposes included) and none of the history.
    status = node.call("status")
    say(
        f"node {status['peer']} ({status['version']}): home space {status['home_space']}, "
        f"{status['peers']} peers, last event #{status['last_event']}"
    )
    summary["peer"] = status["peer"]

    # 1. Register: name and capabilities, announced to peers.
    me = node.call("register", {"name": args.name, "capabilities": args.capability})
    caps = ", ".join(c["name"] for c in me["capabilities"]) or "none"
    say(f"registered as {me['name']} with capabilities: {caps}")

    # 2. Follow events in the background before writing anything, from the current position.
    follower = Follower(node, status["last_event"], args.pattern)
    follower.start()
    # Waiting for the stream to open is not needed for correctness (it starts at
    # last_event, so nothing is missed), but it surfaces a refused stream before we write.
    if not follower.wait_for(lambda: follower.connected, CALL_TIMEOUT_S):
        raise Unreachable(f"the event stream did not open within {CALL_TIMEOUT_S} s")

    try:
        # 3. Expose: one entry per fact; the answer's id is what the event will carry.
        for key, value in args.expose:
            body = {"key": key, "value": value, **space}
            if args.tier:
                body["tier"] = args.tier
            answer = node.call("expose", body)
            note = f" (capped: {answer['capped']})" if answer.get("capped") else ""
            say(f"exposed {key} [{short(answer['id'])}] at tier {answer['tier']}{note}")
            summary["exposed"].append({"key": key, "id": answer["id"], "tier": answer["tier"]})

        # 4. Search: ranked hits within a token budget.
        if args.search is not None:
            body = {"text": args.search, **space}
            if args.max_tokens is not None:
                body["max_tokens"] = args.max_tokens
            answer = node.call("search", body)
            say(
                f"search {args.search!r}: {len(answer['hits'])} hits, {answer['total_tokens']} "
                f"tokens, {answer['left_out']} left out"
            )
            for hit in answer["hits"]:
                e = hit["entry"]
                say(
                    f"  [{short(e['id'])}] {e['key']} (…{short_peer(e['owner'])}, {e['kind']}, "
                    f"{e['tier']}, score {hit['score']:.3f}): {e['value']}"
                )
            summary["search_hits"] = len(answer["hits"])

        # 5. Query: every visible entry under a key pattern.
        if args.query is not None:
            answer = node.call("query", {"pattern": args.query, **space})
            say(
                f"query {args.query!r}: {len(answer['hits'])} hits, {answer['hidden']} hidden, "
                f"{answer['tokens']} tokens"
            )
            for e in answer["hits"]:
                say(f"  [{short(e['id'])}] {e['key']} (…{short_peer(e['owner'])}): {e['value']}")
            for d in answer["denied"]:
                say(f"  hidden {d['key']}: {d['reason']}")
            summary["query_hits"] = len(answer["hits"])

        # 6. Wait for the events of our own exposes (type "exposed", carrying the ids above),
        #    or just follow for --follow-seconds if we exposed nothing.
        mine = {x["id"] for x in summary["exposed"]}
        if mine:
            confirmed = follower.wait_for(lambda: mine <= follower.ids_seen, args.follow_seconds)
            if confirmed:
                say(f"all {len(mine)} exposes confirmed on the event stream")
            else:
                missing = ", ".join(short(i) for i in sorted(mine - follower.ids_seen))
                warn(f"warning: no event for [{missing}] within {args.follow_seconds} s")
            summary["exposes_confirmed"] = confirmed
        else:
            follower.wait_for(lambda: False, args.follow_seconds)
    finally:
        follower.record(summary)  # also on an error, for the summary


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # What happened, for --json-summary.
    summary = {
        "ok": True,
        "peer": None,
        "exposed": [],
        "search_hits": None,
        "query_hits": None,
        "events_seen": 0,
        "event_types": [],
        "exposes_confirmed": None,
    }
    try:
        run(args, summary)
    except (ApiError, Unreachable, NotFound) as e:
        # Any API error ends the agent: its message says what was wrong and what was expected.
        warn(f"error: {e}")
        if args.json_summary:
            summary.update(ok=False, error=str(e), error_code=getattr(e, "code", None))
            print_summary(summary)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json_summary:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
