//! Every kubectl minor version beside the default one (1.27 … 1.33) drives the same server:
//! discovery, OpenAPI (v2 protobuf for 1.27/1.28, v3 after), apply, get, explain, delete.

mod support;

use std::path::Path;
use std::process::Command;

const SDK_BIN: &str = "/usr/lib/google-cloud-sdk/bin";

#[test]
fn kubectl_1_27_to_1_33_work() {
    let versions: Vec<String> = (27..=33)
        .map(|minor| format!("{SDK_BIN}/kubectl.1.{minor}"))
        .filter(|path| Path::new(path).exists())
        .collect();
    assert!(
        !versions.is_empty(),
        "no versioned kubectl found in {SDK_BIN}"
    );
    let server = support::Server::start();
    for (i, kubectl) in versions.iter().enumerate() {
        let run = |args: &[&str], stdin: Option<&str>| {
            use std::io::Write;
            let mut child = Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(server.kubeconfig())
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.unwrap_or("").as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{kubectl} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let name = format!("web-{i}");
        let manifest = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.14.2\n"
        );
        assert!(
            run(&["apply", "-f", "-"], Some(&manifest)).contains("created"),
            "{kubectl}"
        );
        let changed = manifest.replace("replicas: 2", "replicas: 3");
        assert!(
            run(&["apply", "-f", "-"], Some(&changed)).contains("configured"),
            "{kubectl}"
        );
        let got = run(
            &[
                "get",
                "deployment",
                &name,
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            None,
        );
        assert_eq!(got, "3", "{kubectl}");
        let table = run(&["get", "deployments"], None);
        assert!(
            table.contains("UP-TO-DATE") && table.contains(&name),
            "{kubectl}: {table}"
        );
        let explain = run(&["explain", "pods.spec.containers.image"], None);
        assert!(explain.contains("image"), "{kubectl}: {explain}");
        assert!(
            run(&["api-resources"], None).contains("deployments"),
            "{kubectl}"
        );
        run(&["delete", "deployment", &name], None);
    }
}

/// kubectl 1.32 and later send typed creates as Kubernetes protobuf.
#[test]
fn typed_creates_in_protobuf_from_kubectl_1_32_and_1_33() {
    let server = support::Server::start();
    for minor in [32, 33] {
        let kubectl = format!("{SDK_BIN}/kubectl.1.{minor}");
        if !Path::new(&kubectl).exists() {
            continue;
        }
        let ns = format!("pb-{minor}");
        let run = |args: &[&str]| {
            let out = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(server.kubeconfig())
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "kubectl.1.{minor} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        run(&["create", "namespace", &ns]);
        let n = ["-n", ns.as_str()];
        let creates: Vec<Vec<&str>> = vec![
            vec!["create", "configmap", "cm", "--from-literal=a=b"],
            vec!["create", "secret", "generic", "s", "--from-literal=p=q"],
            vec![
                "create",
                "deployment",
                "d",
                "--image=nginx:1.14.2",
                "--replicas=0",
            ],
            vec!["create", "job", "j", "--image=busybox:1.36"],
            vec![
                "create",
                "cronjob",
                "cj",
                "--image=busybox:1.36",
                "--schedule=*/5 * * * *",
            ],
            vec!["create", "service", "clusterip", "svc", "--tcp=80:8080"],
            vec!["create", "serviceaccount", "sa"],
            vec!["create", "role", "r", "--verb=get", "--resource=pods"],
            vec!["create", "rolebinding", "rb", "--role=r", "--user=alice"],
            vec!["create", "quota", "q", "--hard=pods=10"],
            vec![
                "create",
                "poddisruptionbudget",
                "pdb",
                "--selector=app=x",
                "--min-available=1",
            ],
            vec!["create", "ingress", "ing", "--rule=example.com/=svc:80"],
        ];
        for create in &creates {
            let mut args = create.clone();
            args.extend_from_slice(&n);
            run(&args);
        }
        let d = run(&[
            "get",
            "deployment",
            "d",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.replicas}/{.spec.template.spec.containers[0].image}",
        ]);
        assert_eq!(d, "0/nginx:1.14.2", "kubectl.1.{minor}");
        let cm = run(&[
            "get",
            "configmap",
            "cm",
            "-n",
            &ns,
            "-o",
            "jsonpath={.data.a}",
        ]);
        assert_eq!(cm, "b");
        let svc = run(&[
            "get",
            "service",
            "svc",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.ports[0].targetPort}",
        ]);
        assert_eq!(svc, "8080");
        let cj = run(&[
            "get",
            "cronjob",
            "cj",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.schedule}",
        ]);
        assert_eq!(cj, "*/5 * * * *");
    }
}
