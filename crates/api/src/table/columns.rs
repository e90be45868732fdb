//! Column definitions per printer, as upstream's printers declare them. Field descriptions
//! come from the OpenAPI schemas of the k8s-openapi types (the same Go doc comments upstream
//! reads through `SwaggerDoc()`), so they are computed once per printer and cached.

use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, discovery, networking, rbac};
use k8s_openapi::api::{scheduling, storage};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::Printer;

const CONTAINERS: &str = "Names of each container in the template.";
const IMAGES: &str = "Images referenced by each container in the template.";
const READY_PODS: &str = "Number of the pod with ready state";

/// The description of `field` in the schema of `T`, or "" when the schema has none.
fn doc<T: schemars::JsonSchema>(field: &str) -> String {
    let mut generator = schemars::SchemaGenerator::default();
    let schema = T::json_schema(&mut generator);
    schema
        .get("properties")
        .and_then(|p| p.get(field))
        .and_then(|f| f.get("description"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn meta(field: &str) -> String {
    doc::<ObjectMeta>(field)
}

fn column(name: &str, ty: &str, format: &str, description: String, priority: i64) -> Value {
    json!({
        "name": name,
        "type": ty,
        "format": format,
        "description": description,
        "priority": priority,
    })
}

/// A column shown by default.
fn col(name: &str, ty: &str, description: impl Into<String>) -> Value {
    column(name, ty, "", description.into(), 0)
}

/// A column shown only with `-o wide` (priority 1).
fn wide(name: &str, ty: &str, description: impl Into<String>) -> Value {
    column(name, ty, "", description.into(), 1)
}

fn name_col() -> Value {
    column("Name", "string", "name", meta("name"), 0)
}

fn age_col() -> Value {
    col("Age", "string", meta("creationTimestamp"))
}

/// Wide CONTAINERS, IMAGES and (when given) SELECTOR columns of workload printers.
fn template_cols(out: &mut Vec<Value>, selector: Option<String>) {
    out.push(wide("Containers", "string", CONTAINERS));
    out.push(wide("Images", "string", IMAGES));
    if let Some(selector) = selector {
        out.push(wide("Selector", "string", selector));
    }
}

pub(super) fn build(printer: Printer) -> Vec<Value> {
    use Printer as P;
    let mut c = Vec::with_capacity(12);
    match printer {
        P::Pod => {
            c.push(name_col());
            c.push(col(
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
            ));
            c.push(col(
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
            ));
            c.push(col(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ));
            c.push(age_col());
            c.push(wide("IP", "string", doc::<core::v1::PodStatus>("podIP")));
            c.push(wide("Node", "string", doc::<core::v1::PodSpec>("nodeName")));
            c.push(wide(
                "Nominated Node",
                "string",
                doc::<core::v1::PodStatus>("nominatedNodeName"),
            ));
            c.push(wide(
                "Readiness Gates",
                "string",
                doc::<core::v1::PodSpec>("readinessGates"),
            ));
        }
        P::PodTemplate => {
            c.push(name_col());
            c.push(col("Containers", "string", CONTAINERS));
            c.push(col("Images", "string", IMAGES));
            c.push(col(
                "Pod Labels",
                "string",
                "The labels for the pod template.",
            ));
        }
        P::PodDisruptionBudget => {
            c.push(name_col());
            c.push(col(
                "Min Available",
                "string",
                "The minimum number of pods that must be available.",
            ));
            c.push(col(
                "Max Unavailable",
                "string",
                "The maximum number of pods that may be unavailable.",
            ));
            c.push(col(
                "Allowed Disruptions",
                "integer",
                "Calculated number of pods that may be disrupted at this time.",
            ));
            c.push(age_col());
        }
        P::ReplicationController => {
            use core::v1::{ReplicationControllerSpec as Spec, ReplicationControllerStatus as St};
            c.push(name_col());
            c.push(col("Desired", "integer", doc::<Spec>("replicas")));
            c.push(col("Current", "integer", doc::<St>("replicas")));
            c.push(col("Ready", "integer", doc::<St>("readyReplicas")));
            c.push(age_col());
            template_cols(&mut c, Some(doc::<Spec>("selector")));
        }
        P::ReplicaSet => {
            use apps::v1::{ReplicaSetSpec as Spec, ReplicaSetStatus as St};
            c.push(name_col());
            c.push(col("Desired", "integer", doc::<Spec>("replicas")));
            c.push(col("Current", "integer", doc::<St>("replicas")));
            c.push(col("Ready", "integer", doc::<St>("readyReplicas")));
            c.push(age_col());
            template_cols(&mut c, Some(doc::<Spec>("selector")));
        }
        P::DaemonSet => {
            use apps::v1::DaemonSetStatus as St;
            c.push(name_col());
            c.push(col(
                "Desired",
                "integer",
                doc::<St>("desiredNumberScheduled"),
            ));
            c.push(col(
                "Current",
                "integer",
                doc::<St>("currentNumberScheduled"),
            ));
            c.push(col("Ready", "integer", doc::<St>("numberReady")));
            c.push(col(
                "Up-to-date",
                "integer",
                doc::<St>("updatedNumberScheduled"),
            ));
            c.push(col("Available", "integer", doc::<St>("numberAvailable")));
            c.push(col(
                "Node Selector",
                "string",
                doc::<core::v1::PodSpec>("nodeSelector"),
            ));
            c.push(age_col());
            template_cols(&mut c, Some(doc::<apps::v1::DaemonSetSpec>("selector")));
        }
        P::Job => {
            c.push(name_col());
            c.push(col("Status", "string", "Status of the job."));
            c.push(col(
                "Completions",
                "string",
                doc::<batch::v1::JobStatus>("succeeded"),
            ));
            c.push(col(
                "Duration",
                "string",
                "Time required to complete the job.",
            ));
            c.push(age_col());
            template_cols(&mut c, Some(doc::<batch::v1::JobSpec>("selector")));
        }
        P::CronJob => {
            use batch::v1::{CronJobSpec as Spec, CronJobStatus as St};
            c.push(name_col());
            c.push(col("Schedule", "string", doc::<Spec>("schedule")));
            c.push(col("Timezone", "string", doc::<Spec>("timeZone")));
            c.push(col("Suspend", "boolean", doc::<Spec>("suspend")));
            c.push(col("Active", "integer", doc::<St>("active")));
            c.push(col(
                "Last Schedule",
                "string",
                doc::<St>("lastScheduleTime"),
            ));
            c.push(age_col());
            template_cols(&mut c, Some(doc::<batch::v1::JobSpec>("selector")));
        }
        P::Service => {
            use core::v1::ServiceSpec as Spec;
            c.push(name_col());
            c.push(col("Type", "string", doc::<Spec>("type")));
            c.push(col("Cluster-IP", "string", doc::<Spec>("clusterIP")));
            c.push(col("External-IP", "string", doc::<Spec>("externalIPs")));
            c.push(col("Port(s)", "string", doc::<Spec>("ports")));
            c.push(age_col());
            c.push(wide("Selector", "string", doc::<Spec>("selector")));
        }
        P::Ingress => {
            c.push(name_col());
            c.push(col(
                "Class",
                "string",
                "The name of the IngressClass resource that should be used for additional configuration",
            ));
            c.push(col(
                "Hosts",
                "string",
                "Hosts that incoming requests are matched against before the ingress rule",
            ));
            c.push(col(
                "Address",
                "string",
                "Address is a list containing ingress points for the load-balancer",
            ));
            c.push(col(
                "Ports",
                "string",
                "Ports of TLS configurations that open",
            ));
            c.push(age_col());
        }
        P::IngressClass => {
            c.push(name_col());
            c.push(col(
                "Controller",
                "string",
                "Controller that is responsible for handling this class",
            ));
            c.push(col(
                "Parameters",
                "string",
                "A reference to a resource with additional parameters",
            ));
            c.push(age_col());
        }
        P::StatefulSet => {
            c.push(name_col());
            c.push(col("Ready", "string", READY_PODS));
            c.push(age_col());
            template_cols(&mut c, None);
        }
        P::Endpoints => {
            c.push(name_col());
            c.push(col(
                "Endpoints",
                "string",
                doc::<core::v1::Endpoints>("subsets"),
            ));
            c.push(age_col());
        }
        P::Node => {
            use core::v1::NodeSystemInfo as Info;
            c.push(name_col());
            c.push(col("Status", "string", "The status of the node"));
            c.push(col("Roles", "string", "The roles of the node"));
            c.push(age_col());
            c.push(col("Version", "string", doc::<Info>("kubeletVersion")));
            let addresses = doc::<core::v1::NodeStatus>("addresses");
            c.push(wide("Internal-IP", "string", addresses.clone()));
            c.push(wide("External-IP", "string", addresses));
            c.push(wide("OS-Image", "string", doc::<Info>("osImage")));
            c.push(wide(
                "Kernel-Version",
                "string",
                doc::<Info>("kernelVersion"),
            ));
            c.push(wide(
                "Container-Runtime",
                "string",
                doc::<Info>("containerRuntimeVersion"),
            ));
        }
        // Both event APIs print through one printer upstream (the internal type is shared),
        // with the core/v1 field descriptions.
        P::Event | P::EventsV1 => {
            use core::v1::Event as Ev;
            c.push(col("Last Seen", "string", doc::<Ev>("lastTimestamp")));
            c.push(col("Type", "string", doc::<Ev>("type")));
            c.push(col("Reason", "string", doc::<Ev>("reason")));
            c.push(col("Object", "string", doc::<Ev>("involvedObject")));
            c.push(wide(
                "Subobject",
                "string",
                doc::<core::v1::ObjectReference>("fieldPath"),
            ));
            c.push(wide("Source", "string", doc::<Ev>("source")));
            c.push(col("Message", "string", doc::<Ev>("message")));
            c.push(wide("First Seen", "string", doc::<Ev>("firstTimestamp")));
            c.push(wide("Count", "string", doc::<Ev>("count")));
            c.push(column("Name", "string", "name", meta("name"), 1));
        }
        P::Namespace => {
            c.push(name_col());
            c.push(col("Status", "string", "The status of the namespace"));
            c.push(age_col());
        }
        P::Secret => {
            c.push(name_col());
            c.push(col("Type", "string", doc::<core::v1::Secret>("type")));
            c.push(col("Data", "string", doc::<core::v1::Secret>("data")));
            c.push(age_col());
        }
        P::ServiceAccount => {
            c.push(name_col());
            c.push(col(
                "Secrets",
                "string",
                doc::<core::v1::ServiceAccount>("secrets"),
            ));
            c.push(age_col());
        }
        P::PersistentVolume => {
            use core::v1::{PersistentVolumeSpec as Spec, PersistentVolumeStatus as St};
            c.push(name_col());
            c.push(col("Capacity", "string", doc::<Spec>("capacity")));
            c.push(col("Access Modes", "string", doc::<Spec>("accessModes")));
            c.push(col(
                "Reclaim Policy",
                "string",
                doc::<Spec>("persistentVolumeReclaimPolicy"),
            ));
            c.push(col("Status", "string", doc::<St>("phase")));
            c.push(col("Claim", "string", doc::<Spec>("claimRef")));
            c.push(col("StorageClass", "string", "StorageClass of the pv"));
            c.push(col(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pv",
            ));
            c.push(col("Reason", "string", doc::<St>("reason")));
            c.push(age_col());
            c.push(wide("VolumeMode", "string", doc::<Spec>("volumeMode")));
        }
        P::PersistentVolumeClaim => {
            use core::v1::{PersistentVolumeClaimSpec as Spec, PersistentVolumeClaimStatus as St};
            c.push(name_col());
            c.push(col("Status", "string", doc::<St>("phase")));
            c.push(col("Volume", "string", doc::<Spec>("volumeName")));
            c.push(col("Capacity", "string", doc::<St>("capacity")));
            c.push(col("Access Modes", "string", doc::<St>("accessModes")));
            c.push(col("StorageClass", "string", "StorageClass of the pvc"));
            c.push(col(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pvc",
            ));
            c.push(age_col());
            c.push(wide("VolumeMode", "string", doc::<Spec>("volumeMode")));
        }
        P::Deployment => {
            use apps::v1::{DeploymentSpec as Spec, DeploymentStatus as St};
            c.push(name_col());
            c.push(col("Ready", "string", READY_PODS));
            c.push(col("Up-to-date", "string", doc::<St>("updatedReplicas")));
            c.push(col("Available", "string", doc::<St>("availableReplicas")));
            c.push(age_col());
            template_cols(&mut c, Some(doc::<Spec>("selector")));
        }
        P::HorizontalPodAutoscaler => {
            use autoscaling::v2::{
                HorizontalPodAutoscalerSpec as Spec, HorizontalPodAutoscalerStatus as St,
            };
            c.push(name_col());
            c.push(col("Reference", "string", doc::<Spec>("scaleTargetRef")));
            c.push(col("Targets", "string", doc::<Spec>("metrics")));
            c.push(col("MinPods", "string", doc::<Spec>("minReplicas")));
            c.push(col("MaxPods", "string", doc::<Spec>("maxReplicas")));
            c.push(col("Replicas", "string", doc::<St>("currentReplicas")));
            c.push(age_col());
        }
        P::ConfigMap => {
            c.push(name_col());
            c.push(col("Data", "string", doc::<core::v1::ConfigMap>("data")));
            c.push(age_col());
        }
        P::NetworkPolicy => {
            c.push(name_col());
            c.push(col(
                "Pod-Selector",
                "string",
                doc::<networking::v1::NetworkPolicySpec>("podSelector"),
            ));
            c.push(age_col());
        }
        P::RoleBinding | P::ClusterRoleBinding => {
            let (role_ref, subject_of) = if printer == P::RoleBinding {
                (doc::<rbac::v1::RoleBinding>("roleRef"), "roleBinding")
            } else {
                (
                    doc::<rbac::v1::ClusterRoleBinding>("roleRef"),
                    "clusterRoleBinding",
                )
            };
            c.push(name_col());
            c.push(col("Role", "string", role_ref));
            c.push(age_col());
            c.push(wide(
                "Users",
                "string",
                format!("Users in the {subject_of}"),
            ));
            c.push(wide(
                "Groups",
                "string",
                format!("Groups in the {subject_of}"),
            ));
            c.push(wide(
                "ServiceAccounts",
                "string",
                format!("ServiceAccounts in the {subject_of}"),
            ));
        }
        P::Lease => {
            c.push(name_col());
            c.push(col(
                "Holder",
                "string",
                doc::<coordination::v1::LeaseSpec>("holderIdentity"),
            ));
            c.push(age_col());
        }
        P::StorageClass => {
            use storage::v1::StorageClass as Sc;
            c.push(name_col());
            c.push(col("Provisioner", "string", doc::<Sc>("provisioner")));
            c.push(col("ReclaimPolicy", "string", doc::<Sc>("reclaimPolicy")));
            c.push(col(
                "VolumeBindingMode",
                "string",
                doc::<Sc>("volumeBindingMode"),
            ));
            c.push(col(
                "AllowVolumeExpansion",
                "string",
                doc::<Sc>("allowVolumeExpansion"),
            ));
            c.push(age_col());
        }
        P::ControllerRevision => {
            c.push(name_col());
            c.push(col("Controller", "string", "Controller of the object"));
            c.push(col(
                "Revision",
                "string",
                doc::<apps::v1::ControllerRevision>("revision"),
            ));
            c.push(age_col());
        }
        P::ResourceQuota => {
            c.push(name_col());
            c.push(col(
                "Request",
                "string",
                "Request represents a minimum amount of cpu/memory that a container may consume.",
            ));
            c.push(col(
                "Limit",
                "string",
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            ));
            c.push(age_col());
        }
        P::PriorityClass => {
            use scheduling::v1::PriorityClass as Pc;
            c.push(name_col());
            c.push(col("Value", "integer", doc::<Pc>("value")));
            c.push(col("Global-Default", "boolean", doc::<Pc>("globalDefault")));
            c.push(age_col());
            c.push(wide(
                "PreemptionPolicy",
                "string",
                doc::<Pc>("preemptionPolicy"),
            ));
        }
        P::EndpointSlice => {
            use discovery::v1::EndpointSlice as Es;
            c.push(name_col());
            c.push(col("AddressType", "string", doc::<Es>("addressType")));
            c.push(col("Ports", "string", doc::<Es>("ports")));
            c.push(col("Endpoints", "string", doc::<Es>("endpoints")));
            c.push(age_col());
        }
        // Upstream's default table convertor, used for kinds without a printer
        // (roles, clusterroles, limitranges, ...).
        P::Default => {
            c.push(name_col());
            c.push(col("Created At", "date", meta("creationTimestamp")));
        }
    }
    c
}
