"""The official Python client's exec (v4.channel.k8s.io) and port-forward (WebSocket channels,
not SPDY) against the pods of tests/streaming.rs. Usage: streaming_test.py KUBECONFIG"""

import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream

config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()

out = stream(
    api.connect_get_namespaced_pod_exec,
    "ticker",
    "default",
    command=["sh", "-c", "echo from python"],
    stderr=True,
    stdin=False,
    stdout=True,
    tty=False,
)
assert out == "from python\n", repr(out)

forward = portforward(
    api.connect_get_namespaced_pod_portforward, "web", "default", ports="8080"
)
sock = forward.socket(8080)
sock.setblocking(True)
sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
response = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    response += chunk
sock.close()
body = response.split(b"\r\n\r\n", 1)[-1]
assert body == b"web 1.0\n", repr(response)
assert forward.error(8080) is None, forward.error(8080)
forward.close()
print("python streaming: ok")
