"""The official Python client against a running rkube: create, list, watch, delete.

Usage: client_test.py KUBECONFIG. Exits non-zero with a message on the first failure.
"""
import sys
import threading

from kubernetes import client, config, watch


def main(kubeconfig: str) -> None:
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    namespaces = [ns.metadata.name for ns in core.list_namespace().items]
    assert "default" in namespaces, namespaces

    ns = "pyclient"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

    seen = []
    ready = threading.Event()

    def watch_configmaps() -> None:
        w = watch.Watch()
        ready.set()
        for event in w.stream(core.list_namespaced_config_map, namespace=ns, timeout_seconds=20):
            seen.append((event["type"], event["object"].metadata.name))
            if ("DELETED", "cm-2") in seen:
                w.stop()

    watcher = threading.Thread(target=watch_configmaps, daemon=True)
    watcher.start()
    ready.wait(5)

    for i in range(3):
        core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"cm-{i}", labels={"n": str(i)}), data={"i": str(i)})
        )
    listed = core.list_namespaced_config_map(ns, label_selector="n in (1,2)")
    assert sorted(cm.metadata.name for cm in listed.items) == ["cm-1", "cm-2"], listed.items

    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.14.2")]),
            ),
        ),
    )
    created = apps.create_namespaced_deployment(ns, deployment)
    assert created.spec.strategy.type == "RollingUpdate", created.spec.strategy
    read = apps.read_namespaced_deployment("web", ns)
    assert read.metadata.uid == created.metadata.uid

    for i in range(3):
        core.delete_namespaced_config_map(f"cm-{i}", ns)
    apps.delete_namespaced_deployment("web", ns)
    watcher.join(20)
    for i in range(3):
        assert ("ADDED", f"cm-{i}") in seen, seen
        assert ("DELETED", f"cm-{i}") in seen, seen
    remaining = core.list_namespaced_config_map(ns).items
    assert remaining == [], remaining
    try:
        core.read_namespaced_config_map("cm-0", ns)
        raise AssertionError("cm-0 still readable after delete")
    except client.exceptions.ApiException as e:
        assert e.status == 404, e
    print("python client: ok")


if __name__ == "__main__":
    main(sys.argv[1])
