//! persistentVolumeClaim (and generic ephemeral) volumes: the claim must be Bound to a
//! PersistentVolume whose data lives on this node (`local` or `hostPath`); the container gets
//! that directory itself, which outlives every pod.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};

/// The node directory of a bound claim's volume (created 0777 when missing, as the local-path
/// provisioner does). `owner_pod` is set for generic ephemeral volumes, whose claim must belong
/// to the pod. The error is the message of a FailedMount.
pub async fn claim_path(
    client: &kube::Client,
    namespace: &str,
    claim_name: &str,
    owner_pod: Option<&Pod>,
) -> Result<PathBuf, String> {
    let pvc = super::get_namespaced::<PersistentVolumeClaim>(client, namespace, claim_name)
        .await?
        .ok_or_else(|| format!("persistentvolumeclaim {claim_name:?} not found"))?;
    check_claim(&pvc, namespace, owner_pod)?;
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    let pv = kube::Api::<PersistentVolume>::all(client.clone())
        .get_opt(&pv_name)
        .await
        .map_err(|e| format!("failed to fetch PV {pv_name} from API server: {e}"))?
        .ok_or_else(|| format!("persistentvolume {pv_name:?} not found"))?;
    let path = volume_path(&pv, &pvc)?;
    ensure_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The claim is usable by this pod: not being deleted, Bound, and (ephemeral) owned by the pod.
pub fn check_claim(
    pvc: &PersistentVolumeClaim,
    namespace: &str,
    owner_pod: Option<&Pod>,
) -> Result<(), String> {
    let name = pvc.metadata.name.as_deref().unwrap_or("");
    if let Some(pod) = owner_pod {
        let pod_uid = pod.metadata.uid.as_deref().unwrap_or("");
        let owned = pvc
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && r.uid == pod_uid);
        if !owned {
            return Err(format!(
                "PVC {namespace}/{name} was not created for pod {namespace}/{} (pod is not owner)",
                pod.metadata.name.as_deref().unwrap_or("")
            ));
        }
    }
    if pvc.metadata.deletion_timestamp.is_some() {
        return Err(format!(
            "can't start pod because PVC {namespace}/{name} is being deleted"
        ));
    }
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    let volume_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("");
    if phase != "Bound" || volume_name.is_empty() {
        return Err(format!(
            "PVC {namespace}/{name} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume_name:?})"
        ));
    }
    Ok(())
}

/// Where the volume's data is on the node, after checking the volume is bound to this claim.
pub fn volume_path(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<PathBuf, String> {
    let pv_name = pv.metadata.name.as_deref().unwrap_or("");
    let spec = pv
        .spec
        .as_ref()
        .ok_or_else(|| format!("persistentvolume {pv_name:?} has no spec"))?;
    if let (Some(claim_ref), Some(uid)) = (&spec.claim_ref, pvc.metadata.uid.as_deref())
        && claim_ref
            .uid
            .as_deref()
            .is_some_and(|u| !u.is_empty() && u != uid)
    {
        return Err(format!(
            "the claim UID stored in PV {pv_name:?} does not match the claim's UID ({uid:?})"
        ));
    }
    if let Some(local) = &spec.local {
        return Ok(PathBuf::from(&local.path));
    }
    if let Some(host_path) = &spec.host_path {
        return Ok(PathBuf::from(&host_path.path));
    }
    Err(format!(
        "persistentvolume {pv_name:?} has no local or hostPath source: this node supports only local volumes"
    ))
}

fn ensure_dir(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LocalVolumeSource, ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
        PersistentVolumeSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pvc(phase: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                uid: Some("claim-uid".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                volume_name: volume.map(Into::into),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn unbound_claims_wait() {
        assert_eq!(
            check_claim(&pvc("Pending", None), "ns", None).unwrap_err(),
            "PVC ns/data has non-bound phase (\"Pending\") or empty pvc.Spec.VolumeName (\"\")"
        );
        check_claim(&pvc("Bound", Some("pv-1")), "ns", None).unwrap();
    }

    #[test]
    fn ephemeral_claims_must_belong_to_the_pod() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                uid: Some("pod-uid".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut claim = pvc("Bound", Some("pv-1"));
        assert!(
            check_claim(&claim, "ns", Some(&pod))
                .unwrap_err()
                .contains("pod is not owner")
        );
        claim.metadata.owner_references = Some(vec![OwnerReference {
            controller: Some(true),
            uid: "pod-uid".into(),
            ..Default::default()
        }]);
        check_claim(&claim, "ns", Some(&pod)).unwrap();
    }

    #[test]
    fn local_and_host_path_volumes() {
        let mut pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pv-1".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                local: Some(LocalVolumeSource {
                    path: "/var/lib/rkube/storage/pv-1".into(),
                    fs_type: None,
                }),
                claim_ref: Some(ObjectReference {
                    uid: Some("claim-uid".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let claim = pvc("Bound", Some("pv-1"));
        assert_eq!(
            volume_path(&pv, &claim).unwrap(),
            PathBuf::from("/var/lib/rkube/storage/pv-1")
        );
        pv.spec.as_mut().unwrap().claim_ref.as_mut().unwrap().uid = Some("other".into());
        assert!(
            volume_path(&pv, &claim)
                .unwrap_err()
                .contains("does not match")
        );
        pv.spec.as_mut().unwrap().claim_ref = None;
        pv.spec.as_mut().unwrap().local = None;
        assert!(volume_path(&pv, &claim).is_err());
    }

    #[test]
    fn missing_directories_are_created_world_writable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pv/data");
        ensure_dir(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o777
        );
    }
}
