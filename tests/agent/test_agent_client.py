"""agent.client: GraphQL over HTTP against a real (scripted) server on 127.0.0.1."""

from __future__ import annotations

import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from agent import __version__, client
from tests.certs import make_ca, make_cert

OK = {
    "data": {"reportCertificates": {"accepted": 1, "newCertificates": 1, "eventsRecorded": 0, "stale": False, "rejected": []}}
}
FAST = client.Backoff(initial=0.01, maximum=0.02, attempts=4)
TOKEN = "agent-token-Zm9vYmFy"


def graphql_error(message: str, code: str) -> dict:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


def part(number: int, last: bool) -> dict:
    return {"scanId": "s", "part": number, "lastPart": last, "items": []}


def test_request_shape(graphql_server):
    server = graphql_server((200, OK))
    connection = client.GraphQLClient(server.url + "/", TOKEN)
    answers = client.send_report(connection, [part(0, True)], FAST)
    assert answers == [OK["data"]["reportCertificates"]]
    (request,) = server.requests
    assert request.path == "/graphql"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"ctops-agent/{__version__}"
    assert request.body == {"query": client.REPORT_MUTATION, "variables": {"input": part(0, True)}}


def test_server_error_then_success_is_retried_with_backoff(graphql_server):
    server = graphql_server((500, {"errors": [{"message": "boom"}]}), (503, {}), (200, OK))
    slept: list[float] = []
    retried: list[str] = []
    answers = client.send_report(
        client.GraphQLClient(server.url, TOKEN),
        [part(0, True)],
        client.Backoff(initial=0.01, maximum=0.015, attempts=5),
        sleep=slept.append,
        on_retry=lambda exc, delay: retried.append(str(exc)),
    )
    assert answers[0]["accepted"] == 1
    assert len(server.requests) == 3
    assert len(slept) == 2
    assert 0.005 <= slept[0] <= 0.01 and 0.0075 <= slept[1] <= 0.015  # doubled, capped, jittered down
    assert retried[0] == f"HTTP 500 from {server.url}/graphql: boom"


def test_gives_up_after_the_attempts(graphql_server):
    server = graphql_server((502, {}))
    with pytest.raises(client.RequestFailed) as failure:
        client.send_report(client.GraphQLClient(server.url, TOKEN), [part(0, True)], FAST, sleep=lambda s: None)
    assert failure.value.status == 502 and failure.value.retriable
    assert len(server.requests) == FAST.attempts


def test_refused_token_is_not_retried_and_never_printed(graphql_server):
    server = graphql_server((401, graphql_error(f"unknown token {TOKEN}", "UNAUTHENTICATED")))
    with pytest.raises(client.RequestFailed) as failure:
        client.send_report(client.GraphQLClient(server.url, TOKEN), [part(0, True)], FAST, sleep=lambda s: None)
    assert len(server.requests) == 1
    assert failure.value.retriable is False
    assert failure.value.code == "UNAUTHENTICATED"
    assert TOKEN not in str(failure.value)
    assert str(failure.value) == f"HTTP 401 from {server.url}/graphql: token refused: unknown token ***"


def test_too_large_is_not_retried(graphql_server):
    server = graphql_server((413, graphql_error("request body over 64 MiB", "PAYLOAD_TOO_LARGE")))
    with pytest.raises(client.RequestFailed, match="report too large for the server: request body over 64 MiB"):
        client.send_report(client.GraphQLClient(server.url, TOKEN), [part(0, True)], FAST, sleep=lambda s: None)
    assert len(server.requests) == 1


def test_graphql_errors_in_a_200_answer(graphql_server):
    server = graphql_server((200, {"data": None, **graphql_error("Variable '$input' got invalid value", "BAD_USER_INPUT")}))
    with pytest.raises(client.RequestFailed) as failure:
        client.send_report(client.GraphQLClient(server.url, TOKEN), [part(0, True)], FAST, sleep=lambda s: None)
    assert str(failure.value) == "server refused the request (BAD_USER_INPUT): Variable '$input' got invalid value"
    assert not failure.value.retriable and len(server.requests) == 1


def test_unreachable_server_is_retriable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    connection = client.GraphQLClient(f"http://127.0.0.1:{port}", TOKEN, timeout=2)
    with pytest.raises(client.RequestFailed) as failure:
        connection.execute("{ __typename }", {})
    assert failure.value.retriable and "cannot reach" in str(failure.value)


def test_parts_are_sent_in_order(graphql_server):
    server = graphql_server((200, OK))
    parts = [part(0, False), part(1, False), part(2, True)]
    answers = client.send_report(client.GraphQLClient(server.url, TOKEN), parts, FAST)
    assert len(answers) == 3
    assert [r.body["variables"]["input"]["part"] for r in server.requests] == [0, 1, 2]


def test_redirects_are_not_followed(graphql_server):
    target = graphql_server((200, OK))

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(307)
            self.send_header("Location", target.url + "/graphql")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    redirector = HTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=redirector.handle_request, daemon=True)
    thread.start()
    try:
        with pytest.raises(client.RequestFailed, match="redirected to .*; set server_url to the final address"):
            client.GraphQLClient(f"http://127.0.0.1:{redirector.server_address[1]}", TOKEN, timeout=5).execute("{ x }", {})
    finally:
        thread.join(timeout=5)
        redirector.server_close()
    assert target.requests == []  # the token never reached the other address


def test_enroll(graphql_server):
    enrolled = {"agentToken": "new-agent-token", "host": {"id": "7", "hostname": "web01"}}
    server = graphql_server((200, {"data": {"enrollAgent": enrolled}}))
    result = client.enroll(server.url, "enrol-me", hostname="web01", os_name="Linux-test")
    assert result == {"agentToken": "new-agent-token", "host": {"id": "7", "hostname": "web01"}}
    (request,) = server.requests
    assert request.headers["authorization"] == "Bearer enrol-me"
    assert request.body == {
        "query": client.ENROLL_MUTATION,
        "variables": {"input": {"hostname": "web01", "os": "Linux-test", "agentVersion": __version__}},
    }


def test_server_url_must_be_http():
    with pytest.raises(client.RequestFailed, match="must start with http"):
        client.GraphQLClient("file:///etc/passwd", TOKEN)


def test_backoff_delays_double_up_to_the_maximum():
    delays = list(client.Backoff(initial=5, maximum=300, attempts=9).delays(random.Random(3)))
    assert len(delays) == 8
    ceilings = [5, 10, 20, 40, 80, 160, 300, 300]
    for delay, ceiling in zip(delays, ceilings):
        assert ceiling / 2 <= delay <= ceiling


def test_https_with_a_private_ca(graphql_server, tmp_path):
    root = make_ca("Private Server CA")
    leaf = make_cert("ctops.internal", issuer=root, ip_sans=("127.0.0.1",))
    server = graphql_server((200, OK), tls=[leaf, root])
    with pytest.raises(client.RequestFailed) as failure:
        client.send_report(client.GraphQLClient(server.url, TOKEN), [part(0, True)], FAST, sleep=lambda s: None)
    assert failure.value.retriable is False  # an untrusted certificate does not fix itself
    assert "cannot verify the server's certificate" in str(failure.value)
    assert server.requests == []

    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(root.pem)
    answers = client.send_report(client.GraphQLClient(server.url, TOKEN, ca_file=str(ca_file)), [part(0, True)], FAST)
    assert answers[0]["accepted"] == 1
    assert len(server.requests) == 1


def test_unusable_ca_file(tmp_path):
    with pytest.raises(client.RequestFailed, match="cannot use ca_file"):
        client.GraphQLClient("https://127.0.0.1:1", TOKEN, ca_file=str(tmp_path / "missing.pem"))
