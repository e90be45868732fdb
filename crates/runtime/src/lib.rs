//! The node's container runtime, used by the kubelet: OCI images (pull, store, unpack),
//! root filesystems, OCI bundles run by runc through a per-container shim, CNI networking,
//! cgroups.
//!
//! Architecture Invariant: this crate knows nothing about the API server; the kubelet turns
//! pod specs into calls here.

pub mod cgroups;
pub mod container;
pub mod images;
pub mod sandbox;
pub mod shim;
