//! OCI images (being written).
