//! Admission: what happens to a create after defaulting and around validation, as upstream's
//! admission plugins (LimitRanger, ResourceQuota) do. (Being written.)

use std::sync::Arc;

use api::ResourceInfo;
use serde_json::Value;

use crate::ApiServer;
use crate::error::ApiResult;

/// Mutating admission on create (after defaulting, before validation): LimitRange defaults.
pub async fn mutate(server: &Arc<ApiServer>, resource: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    let _ = (server, resource, obj);
    Ok(())
}

/// Validating admission on create (after validation, before the write): ResourceQuota.
pub async fn validate(server: &Arc<ApiServer>, resource: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    let _ = (server, resource, obj);
    Ok(())
}
