//! The generic REST handlers that serve every resource in the registry: get, list, watch,
//! create, update, patch, delete, deletecollection, and the `status`, `scale` and `binding`
//! subresources.

use std::sync::Arc;
use std::time::Duration;

use api::ResourceInfo;
use api::decode::FieldValidation;
use api::fields::FieldSelector;
use api::selector::LabelSelector;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use store::{Compare, Op, RangeRequest, Revision};

use crate::ApiServer;
use crate::auth::UserInfo;
use crate::cache::{CachedObject, EventType, WatchEvent};
use crate::error::{ApiError, ApiResult, Subject};
use crate::http::{Body, header_str};
use crate::request::{Query, Target, Verb};
use crate::strategy;

/// Request bodies larger than this are refused (upstream's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// Attempts of an optimistic read-modify-write before giving up with a conflict.
const MAX_RETRIES: usize = 8;

/// How the client wants objects rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Table(api::table::IncludeObject),
    PartialMetadata,
}

impl Format {
    fn from_request(accept: &str, query: &Query) -> ApiResult<Format> {
        let wants = |as_kind: &str| {
            accept.split(',').any(|part| {
                let params: Vec<&str> = part.split(';').map(str::trim).collect();
                params.contains(&format!("as={as_kind}").as_str())
                    && params.contains(&"g=meta.k8s.io")
            })
        };
        if wants("Table") {
            let include = match query.get("includeObject") {
                None | Some("Metadata") => api::table::IncludeObject::Metadata,
                Some("None") => api::table::IncludeObject::None,
                Some("Object") => api::table::IncludeObject::Object,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "includeObject: unsupported value {other:?}: supported values: \"None\", \"Metadata\", \"Object\""
                    )));
                }
            };
            return Ok(Format::Table(include));
        }
        if wants("PartialObjectMetadata") || wants("PartialObjectMetadataList") {
            return Ok(Format::PartialMetadata);
        }
        if !crate::http::accept_json(accept) && !accept.contains("application/yaml") {
            return Err(ApiError::not_acceptable(accept));
        }
        Ok(Format::Json)
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Table(_) => "application/json;as=Table;v=v1;g=meta.k8s.io",
            Format::PartialMetadata => {
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
            }
        }
    }
}

/// Everything a handler needs about one request.
struct Ctx<'a> {
    server: &'a Arc<ApiServer>,
    target: Target,
    query: Query,
    format: Format,
    user: UserInfo,
    dry_run: bool,
}

impl Ctx<'_> {
    fn resource(&self) -> &'static ResourceInfo {
        self.target.resource
    }

    fn subject<'b>(&'b self, name: &'b str) -> Subject<'b> {
        Subject {
            group: self.resource().group,
            resource: self.resource().plural,
            name,
        }
    }

    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }

    fn key(&self) -> String {
        self.resource()
            .key(self.target.namespace.as_deref(), self.name())
    }
}

pub async fn handle(
    server: &Arc<ApiServer>,
    req: Request<Incoming>,
    target: Target,
    user: UserInfo,
) -> (Response<Body>, String) {
    let query = Query::parse(req.uri().query());
    let verb = target.verb(req.method(), &query);
    let accept = header_str(&req, header::ACCEPT).to_string();
    // Read the body before answering anything: closing a connection with unread request
    // data makes the kernel reset it, and the client may lose the error response.
    let input = if matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        Ok((String::new(), Bytes::new()))
    } else {
        read_body(req).await
    };
    let verb = match verb {
        Ok(v) => v,
        Err(e) => return (crate::http::error(&e), "unknown".into()),
    };
    let result = async {
        let input = input?;
        let format = Format::from_request(&accept, &query)?;
        let dry_run = match query.get("dryRun") {
            None => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "dryRun: Unsupported value: {other:?}: supported values: \"All\""
                )));
            }
        };
        let ctx = Ctx {
            server,
            target,
            query,
            format,
            user,
            dry_run,
        };
        if let (Some(ns), true) = (&ctx.target.namespace, matches!(verb, Verb::Create)) {
            strategy::check_namespace_writable(server, ns, ctx.resource())?;
        }
        dispatch(&ctx, verb, input).await
    }
    .await;
    let response = result.unwrap_or_else(|e| crate::http::error(&e));
    (response, verb.as_str().to_string())
}

async fn dispatch(
    ctx: &Ctx<'_>,
    verb: Verb,
    (content_type, body): (String, Bytes),
) -> ApiResult<Response<Body>> {
    let sub = ctx.target.subresource.as_deref();
    match (verb, sub) {
        (Verb::Get, None | Some("status")) => get(ctx).await,
        (Verb::Get, Some("scale")) => get_scale(ctx).await,
        (Verb::List, None) => list(ctx).await,
        (Verb::Watch, None) => watch(ctx).await,
        (Verb::Create, None) => create(ctx, &content_type, &body).await,
        (Verb::Create, Some("binding")) => bind(ctx, &body).await,
        (Verb::Create, Some("eviction")) => evict(ctx).await,
        (Verb::Update, None | Some("status") | Some("finalize")) => {
            update(ctx, &content_type, &body).await
        }
        (Verb::Update, Some("scale")) => update_scale(ctx, None, &body).await,
        (Verb::Patch, None | Some("status")) => patch(ctx, &content_type, &body).await,
        (Verb::Patch, Some("scale")) => update_scale(ctx, Some(&content_type), &body).await,
        (Verb::Delete, None) => delete(ctx, &body).await,
        (Verb::DeleteCollection, None) => delete_collection(ctx, &body).await,
        (_, Some(sub)) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            format!(
                "the {sub} subresource of {} is not served yet",
                ctx.resource().group_resource()
            ),
        )),
    }
}

async fn read_body(req: Request<Incoming>) -> ApiResult<(String, Bytes)> {
    let content_type = header_str(&req, header::CONTENT_TYPE).to_string();
    let mut body = req.into_body();
    let mut collected = Vec::new();
    let mut too_large = false;
    let mut drained = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if too_large {
            // Keep reading (a bounded amount) so the client receives the 413 instead of a reset.
            drained += data.len();
            if drained > 4 * MAX_BODY {
                break;
            }
        } else if collected.len() + data.len() > MAX_BODY {
            too_large = true;
            collected = Vec::new();
        } else {
            collected.extend_from_slice(&data);
        }
    }
    if too_large {
        return Err(ApiError::too_large());
    }
    normalize_body(content_type, Bytes::from(collected))
}

/// Protobuf and YAML bodies become JSON here, so every handler sees one format.
fn normalize_body(content_type: String, body: Bytes) -> ApiResult<(String, Bytes)> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if api::protobuf::is_protobuf(&media) {
        let (_, _, object) = api::protobuf::decode_envelope(&body).map_err(|e| {
            ApiError::bad_request(format!("decoding the protobuf request body: {e}"))
        })?;
        let json = serde_json::to_vec(&object).expect("JSON values serialize");
        return Ok(("application/json".into(), Bytes::from(json)));
    }
    if media == "application/yaml" {
        let object: Value = serde_yaml::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("decoding the YAML request body: {e}")))?;
        let json = serde_json::to_vec(&object).expect("JSON values serialize");
        return Ok(("application/json".into(), Bytes::from(json)));
    }
    Ok((content_type, body))
}

// ---------------------------------------------------------------------------------------------
// Conversion between the served version and the storage version.

fn storage_row(resource: &ResourceInfo) -> &'static ResourceInfo {
    api::resources::storage_row(resource.storage)
        .expect("every storage resource has a storage version")
}

fn to_served(resource: &ResourceInfo, obj: Value) -> ApiResult<Value> {
    if resource.storage_version {
        return Ok(obj);
    }
    api::conversion::convert(obj, storage_row(resource), resource)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn to_storage(resource: &ResourceInfo, obj: Value) -> ApiResult<Value> {
    if resource.storage_version {
        return Ok(obj);
    }
    api::conversion::convert(obj, resource, storage_row(resource))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The object's JSON as served at the request's version.
fn served_json(resource: &ResourceInfo, obj: &CachedObject) -> ApiResult<Bytes> {
    if resource.storage_version {
        return Ok(obj.json.clone());
    }
    let value = to_served(resource, obj.value())?;
    Ok(Bytes::from(
        serde_json::to_vec(&value).expect("JSON values serialize"),
    ))
}

// ---------------------------------------------------------------------------------------------
// Rendering.

fn render_one(ctx: &Ctx<'_>, code: StatusCode, json: Bytes) -> ApiResult<Response<Body>> {
    let body = match ctx.format {
        Format::Json => json,
        Format::Table(include) => {
            let obj: Value =
                serde_json::from_slice(&json).map_err(|e| ApiError::internal(e.to_string()))?;
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!(""));
            let table = api::table::build_table(
                ctx.resource(),
                std::slice::from_ref(&obj),
                json!({"resourceVersion": rv}),
                include,
                chrono::Utc::now(),
            );
            Bytes::from(serde_json::to_vec(&table).expect("JSON values serialize"))
        }
        Format::PartialMetadata => {
            let obj: Value =
                serde_json::from_slice(&json).map_err(|e| ApiError::internal(e.to_string()))?;
            Bytes::from(
                serde_json::to_vec(&api::table::partial_object_metadata(&obj)).expect("serializes"),
            )
        }
    };
    let content_type = match ctx.format {
        Format::PartialMetadata => "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
        f => f.content_type(),
    };
    Ok(crate::http::bytes(code, content_type, body))
}

fn render_value(ctx: &Ctx<'_>, code: StatusCode, obj: &Value) -> ApiResult<Response<Body>> {
    render_one(
        ctx,
        code,
        Bytes::from(serde_json::to_vec(obj).expect("JSON values serialize")),
    )
}

fn render_list(
    ctx: &Ctx<'_>,
    items: &[Arc<CachedObject>],
    revision: Revision,
    continue_token: Option<String>,
) -> ApiResult<Response<Body>> {
    let resource = ctx.resource();
    let mut list_meta = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = &continue_token {
        list_meta["continue"] = json!(token);
    }
    match ctx.format {
        Format::Json => {
            let mut out =
                Vec::with_capacity(items.iter().map(|o| o.json.len() + 1).sum::<usize>() + 256);
            out.extend_from_slice(b"{\"kind\":\"");
            out.extend_from_slice(resource.list_kind.as_bytes());
            out.extend_from_slice(b"\",\"apiVersion\":\"");
            out.extend_from_slice(resource.api_version().as_bytes());
            out.extend_from_slice(b"\",\"metadata\":");
            out.extend_from_slice(&serde_json::to_vec(&list_meta).expect("serializes"));
            out.extend_from_slice(b",\"items\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&served_json(resource, item)?);
            }
            out.extend_from_slice(b"]}");
            Ok(crate::http::bytes(
                StatusCode::OK,
                Format::Json.content_type(),
                Bytes::from(out),
            ))
        }
        Format::Table(include) => {
            let objects: Vec<Value> = items
                .iter()
                .map(|o| to_served(resource, o.value()))
                .collect::<ApiResult<_>>()?;
            let table =
                api::table::build_table(resource, &objects, list_meta, include, chrono::Utc::now());
            Ok(crate::http::json(StatusCode::OK, &table))
        }
        Format::PartialMetadata => {
            let objects: Vec<Value> = items.iter().map(|o| o.value()).collect();
            let list = api::table::partial_object_metadata_list(&objects, list_meta);
            let mut response = crate::http::json(StatusCode::OK, &list);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(Format::PartialMetadata.content_type()),
            );
            Ok(response)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reads.

/// Parse a `resourceVersion` query parameter.
fn parse_rv(value: Option<&str>) -> ApiResult<Option<Revision>> {
    match value {
        None => Ok(None),
        Some(v) => v
            .parse::<Revision>()
            .ok()
            .filter(|r| *r >= 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "resourceVersion: Invalid value: {v:?}: must be a non-negative integer"
                ))
            }),
    }
}

/// Make the cache current enough for a read at `resourceVersion`.
async fn read_barrier(ctx: &Ctx<'_>, rv: Option<Revision>) -> ApiResult<()> {
    match rv {
        None => {
            ctx.server.cache.sync().await?;
        }
        Some(0) => {}
        Some(rv) => {
            if !ctx.server.cache.wait_for(rv, Duration::from_secs(3)).await {
                return Err(ApiError::timeout(format!("Too large resource version: {rv}, current: {}", ctx.server.cache.revision()))
                    .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})));
            }
        }
    }
    Ok(())
}

async fn get(ctx: &Ctx<'_>) -> ApiResult<Response<Body>> {
    read_barrier(ctx, parse_rv(ctx.query.get("resourceVersion"))?).await?;
    let obj = ctx
        .server
        .cache
        .get(ctx.resource(), &ctx.key())
        .ok_or_else(|| ApiError::not_found(ctx.subject(ctx.name())))?;
    render_one(ctx, StatusCode::OK, served_json(ctx.resource(), &obj)?)
}

struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    fn from_query(resource: &ResourceInfo, query: &Query, name: Option<&str>) -> ApiResult<Filter> {
        let labels =
            match query.get("labelSelector") {
                Some(s) => Some(LabelSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?),
                None => None,
            };
        let mut field_text = query.get("fieldSelector").unwrap_or("").to_string();
        if let Some(name) = name {
            if !field_text.is_empty() {
                field_text.push(',');
            }
            field_text.push_str(&format!("metadata.name={name}"));
        }
        let fields = if field_text.is_empty() {
            None
        } else {
            let selector = FieldSelector::parse(&field_text)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            Some(
                selector
                    .convert_for(resource)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
            )
        };
        Ok(Filter { labels, fields })
    }

    fn matches(&self, obj: &CachedObject) -> bool {
        self.labels.as_ref().is_none_or(|s| s.matches(&*obj.labels))
            && self.fields.as_ref().is_none_or(|s| s.matches(&obj.fields))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, start: &str) -> String {
    let token = serde_json::to_vec(&ContinueToken {
        rv,
        start: start.to_string(),
    })
    .expect("serializes");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
}

fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::bad_request("continue key is not valid: the token cannot be decoded")
        })
}

async fn list(ctx: &Ctx<'_>) -> ApiResult<Response<Body>> {
    let resource = ctx.resource();
    let filter = Filter::from_query(resource, &ctx.query, None)?;
    let limit = ctx.query.int("limit")?.unwrap_or(0).max(0) as usize;
    let prefix = resource.prefix(ctx.target.namespace.as_deref());
    if let Some(token) = ctx.query.get("continue") {
        let token = decode_continue(token)?;
        if !token.start.starts_with(&prefix) {
            return Err(ApiError::bad_request(
                "continue key is not valid: it does not belong to this list",
            ));
        }
        return list_from_store(ctx, &filter, &prefix, limit, token.rv, Some(token.start)).await;
    }
    let rv = parse_rv(ctx.query.get("resourceVersion"))?;
    if ctx.query.get("resourceVersionMatch") == Some("Exact") {
        let Some(rv) = rv.filter(|r| *r > 0) else {
            return Err(ApiError::bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\" or unset",
            ));
        };
        return list_from_store(ctx, &filter, &prefix, limit, rv, None).await;
    }
    read_barrier(ctx, rv).await?;
    let (items, revision, more) = ctx
        .server
        .cache
        .list(resource, &prefix, None, limit, |o| filter.matches(o));
    let token = if more {
        items
            .last()
            .map(|last| encode_continue(revision, &last.key))
    } else {
        None
    };
    render_list(ctx, &items, revision, token)
}

/// A list at an exact past revision, served by the store (continuations and `Exact` lists).
async fn list_from_store(
    ctx: &Ctx<'_>,
    filter: &Filter,
    prefix: &str,
    limit: usize,
    revision: Revision,
    mut start_after: Option<String>,
) -> ApiResult<Response<Body>> {
    let resource = storage_row(ctx.resource());
    let mut items = Vec::new();
    let mut more = false;
    loop {
        let batch = limit.max(100);
        let response = ctx
            .server
            .store
            .range(RangeRequest { key: prefix.to_string(), prefix: true, start_after: start_after.clone(), limit: batch, revision, count_only: false })
            .await
            .map_err(|e| match e {
                store::StoreError::Compacted { .. } => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. Start a new list without the continue parameter.",
                ),
                other => other.into(),
            })?;
        for kv in &response.kvs {
            start_after = Some(kv.key.clone());
            let Some(obj) = CachedObject::from_store(resource, &kv.key, &kv.value, kv.mod_revision)
            else {
                continue;
            };
            if filter.matches(&obj) {
                if limit > 0 && items.len() == limit {
                    more = true;
                    break;
                }
                items.push(Arc::new(obj));
            }
        }
        if more || !response.more {
            break;
        }
    }
    let token = if more {
        items
            .last()
            .map(|last| encode_continue(revision, &last.key))
    } else {
        None
    };
    render_list(ctx, &items, revision, token)
}

// ---------------------------------------------------------------------------------------------
// Watch.

async fn watch(ctx: &Ctx<'_>) -> ApiResult<Response<Body>> {
    let resource = ctx.resource();
    let filter = Filter::from_query(resource, &ctx.query, ctx.target.name.as_deref())?;
    let prefix = resource.prefix(ctx.target.namespace.as_deref());
    let rv = parse_rv(ctx.query.get("resourceVersion"))?;
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    let send_initial = ctx
        .query
        .get("sendInitialEvents")
        .map(|v| matches!(v, "1" | "true" | "True" | "t"));
    let timeout = match ctx.query.int("timeoutSeconds")? {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    let cache = &ctx.server.cache;
    let initial_state = send_initial.unwrap_or(matches!(rv, None | Some(0)));
    let (initial, registration, error) = if initial_state {
        if rv.is_none() {
            cache.sync().await?;
        }
        let (objects, registration) = cache.snapshot(resource, &prefix);
        (objects, Some(registration), None)
    } else {
        match cache.watch(resource, rv.unwrap_or(0)) {
            Ok(registration) => (Vec::new(), Some(registration), None),
            Err(e) => (Vec::new(), None, Some(ApiError::gone(e.to_string()))),
        }
    };

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let format = ctx.format;
    let served = resource;
    let server = ctx.server.clone();
    tokio::spawn(async move {
        server.metrics.watchers.inc();
        let encoder = EventEncoder {
            resource: served,
            format,
            first: std::sync::atomic::AtomicBool::new(true),
        };
        let run = async {
            if let Some(err) = error {
                let line = encoder.line("ERROR", &err.to_status());
                let _ = tx.send(line).await;
                return;
            }
            let Some(mut registration) = registration else {
                return;
            };
            for obj in initial
                .iter()
                .filter(|o| prefix_matches(o, &prefix) && filter.matches(o))
            {
                let Ok(line) = encoder.object_line(EventType::Added, obj) else {
                    continue;
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            let mut last_revision = registration.after;
            if send_initial == Some(true) {
                let mark = encoder.bookmark(last_revision.max(server.cache.revision()), true);
                if tx.send(mark).await.is_err() {
                    return;
                }
            }
            for event in std::mem::take(&mut registration.backlog) {
                if let Some(line) = encoder.event_line(&event, &prefix, &filter)
                    && tx.send(line).await.is_err()
                {
                    return;
                }
                last_revision = event.revision;
            }
            let mut ticker = tokio::time::interval(Duration::from_secs(15));
            ticker.tick().await;
            loop {
                tokio::select! {
                    received = registration.live.recv() => match received {
                        Ok(event) => {
                            if event.revision <= registration.after {
                                continue;
                            }
                            last_revision = event.revision;
                            if let Some(line) = encoder.event_line(&event, &prefix, &filter)
                                && tx.send(line).await.is_err() {
                                    return;
                                }
                        }
                        // Fell behind or the cache restarted: end the stream; the client re-watches.
                        Err(_) => return,
                    },
                    _ = ticker.tick(), if bookmarks => {
                        let rv = last_revision.max(server.cache.revision());
                        if tx.send(encoder.bookmark(rv, false)).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        };
        let _ = tokio::time::timeout(timeout, run).await;
        server.metrics.watchers.dec();
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body = StreamBody::new(futures::StreamExt::map(stream, |b| {
        Ok::<_, std::io::Error>(Frame::data(b))
    }));
    let mut response = Response::new(BodyExt::boxed(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}

/// `{"metadata": …}` of a cached object: a metadata-only watch (the garbage collector's, of
/// every resource) need not build a tree of the whole object for every event.
fn metadata_only(obj: &CachedObject) -> ApiResult<Value> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(default)]
        metadata: Option<Value>,
    }
    let parsed: Metadata =
        serde_json::from_slice(&obj.json).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut out = serde_json::Map::with_capacity(1);
    if let Some(metadata) = parsed.metadata {
        out.insert("metadata".into(), metadata);
    }
    Ok(Value::Object(out))
}

/// `{"type":…,"object":…}` and a newline.
fn json_event_line(kind: EventType, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(json);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn prefix_matches(obj: &CachedObject, prefix: &str) -> bool {
    obj.key.starts_with(prefix)
}

struct EventEncoder {
    resource: &'static ResourceInfo,
    format: Format,
    first: std::sync::atomic::AtomicBool,
}

impl EventEncoder {
    fn line(&self, kind: &str, object: &Value) -> Bytes {
        let mut out =
            serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serializes");
        out.push(b'\n');
        Bytes::from(out)
    }

    fn object_line(&self, kind: EventType, obj: &CachedObject) -> ApiResult<Bytes> {
        match self.format {
            Format::Json => Ok(json_event_line(kind, &served_json(self.resource, obj)?)),
            Format::Table(include) => {
                let value = to_served(self.resource, obj.value())?;
                let rv = value
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                // Column definitions go with the first event only, as upstream sends them.
                let no_headers = !self.first.swap(false, std::sync::atomic::Ordering::Relaxed);
                let options = api::table::TableOptions {
                    include_object: include,
                    no_headers,
                };
                let table = api::table::build_table_with_options(
                    self.resource,
                    std::slice::from_ref(&value),
                    json!({"resourceVersion": rv}),
                    options,
                    chrono::Utc::now(),
                );
                Ok(self.line(kind.as_str(), &table))
            }
            Format::PartialMetadata => Ok(self.line(
                kind.as_str(),
                &api::table::partial_object_metadata(&metadata_only(obj)?),
            )),
        }
    }

    /// The event a watcher sees, or none: selectors turn modifications into additions and
    /// deletions when an object starts or stops matching.
    fn event_line(&self, event: &WatchEvent, prefix: &str, filter: &Filter) -> Option<Bytes> {
        if !prefix_matches(&event.object, prefix) {
            return None;
        }
        let now = filter.matches(&event.object);
        let before = event.prev.as_ref().is_some_and(|p| filter.matches(p));
        let kind = match event.kind {
            EventType::Added if now => EventType::Added,
            EventType::Deleted if before || now => EventType::Deleted,
            EventType::Modified if now && before => EventType::Modified,
            EventType::Modified if now => EventType::Added,
            EventType::Modified if before => EventType::Deleted,
            _ => return None,
        };
        if matches!(self.format, Format::Json) && self.resource.storage_version {
            return Some(event.line(kind, || json_event_line(kind, &event.object.json)));
        }
        self.object_line(kind, &event.object).ok()
    }

    fn bookmark(&self, revision: Revision, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.resource.kind, "apiVersion": self.resource.api_version(), "metadata": metadata});
        self.line("BOOKMARK", &object)
    }
}

// ---------------------------------------------------------------------------------------------
// Writes.

fn content_is_json(content_type: &str) -> ApiResult<()> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "" | "application/json" | "*/*" => Ok(()),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn decode_body(ctx: &Ctx<'_>, content_type: &str, body: &[u8]) -> ApiResult<(Value, Vec<String>)> {
    content_is_json(content_type)?;
    let validation =
        FieldValidation::parse(ctx.query.get("fieldValidation")).map_err(decode_error)?;
    let decoded = api::decode::decode(ctx.resource(), body, validation).map_err(decode_error)?;
    Ok((decoded.object, decoded.warnings))
}

fn decode_error(e: api::decode::DecodeError) -> ApiError {
    let code = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(code, e.reason(), e.to_string())
}

fn with_warnings(mut response: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        if let Ok(value) = HeaderValue::from_str(&format!("299 - {:?}", w)) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// Strip what is never stored (the resourceVersion is the store's mod_revision).
fn stored_bytes(obj: &Value) -> Bytes {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    Bytes::from(serde_json::to_vec(&obj).expect("JSON values serialize"))
}

fn set_rv(obj: &mut Value, revision: Revision) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

async fn create(ctx: &Ctx<'_>, content_type: &str, body: &[u8]) -> ApiResult<Response<Body>> {
    let (obj, warnings) = decode_body(ctx, content_type, body)?;
    let obj = to_storage(ctx.resource(), obj)?;
    let created = create_object(
        ctx.server,
        storage_row(ctx.resource()),
        ctx.target.namespace.as_deref(),
        obj,
        &ctx.user,
        ctx.dry_run,
    )
    .await?;
    let created = to_served(ctx.resource(), created)?;
    Ok(with_warnings(
        render_value(ctx, StatusCode::CREATED, &created)?,
        &warnings,
    ))
}

/// Create an object (storage version) the way every create goes: prepare, admit, validate,
/// allocate, store. Used by the REST handler and by bootstrap.
pub async fn create_object(
    server: &Arc<ApiServer>,
    resource: &'static ResourceInfo,
    namespace: Option<&str>,
    mut obj: Value,
    user: &UserInfo,
    dry_run: bool,
) -> ApiResult<Value> {
    let _ = user;
    let meta_ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(String::from);
    if resource.namespaced {
        let ns = match (namespace, meta_ns.as_deref()) {
            (Some(url), Some(body)) if url != body => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(url), _) => url.to_string(),
            (None, Some(body)) => body.to_string(),
            (None, None) => {
                return Err(ApiError::bad_request(
                    "the namespace of the object is required",
                ));
            }
        };
        obj["metadata"]["namespace"] = json!(ns);
    } else if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("namespace");
    }
    for attempt in 0..MAX_RETRIES {
        let mut candidate = obj.clone();
        strategy::prepare_create(server, resource, &mut candidate)?;
        crate::admission::mutate(server, resource, &mut candidate).await?;
        let name = candidate
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let errors = api::validation::validate_create(resource, &candidate);
        if !errors.is_empty() {
            return Err(ApiError::invalid(
                Subject {
                    group: resource.group,
                    resource: resource.plural,
                    name: &name,
                },
                resource.kind,
                &errors,
            ));
        }
        if !dry_run {
            crate::admission::validate(server, resource, &candidate).await?;
        }
        let namespace = candidate
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(String::from);
        let key = resource.key(namespace.as_deref(), &name);
        let reservations = strategy::reservations(resource, &candidate);
        if dry_run {
            return Ok(candidate);
        }
        let mut compares = vec![Compare {
            key: key.clone(),
            mod_revision: 0,
        }];
        let mut ops = vec![Op::Put {
            key: key.clone(),
            value: stored_bytes(&candidate),
        }];
        for r in &reservations {
            compares.push(Compare {
                key: r.clone(),
                mod_revision: 0,
            });
            ops.push(Op::Put {
                key: r.clone(),
                value: Bytes::from(key.clone()),
            });
        }
        let started = std::time::Instant::now();
        let response = server.store.txn(compares, ops).await?;
        server
            .metrics
            .observe_store("create", started.elapsed().as_secs_f64());
        if response.succeeded {
            set_rv(&mut candidate, response.revision);
            server
                .cache
                .wait_for(response.revision, Duration::from_secs(5))
                .await;
            return Ok(candidate);
        }
        let subject = Subject {
            group: resource.group,
            resource: resource.plural,
            name: &name,
        };
        if response.prev.first().is_some_and(Option::is_some) {
            return Err(ApiError::already_exists(subject));
        }
        // A reservation was taken concurrently. If the client chose it, that is its error;
        // otherwise allocate again.
        if let Some(taken) = strategy::explicit_reservation_conflict(
            resource,
            &obj,
            &reservations,
            &response.prev[1..],
        ) {
            return Err(ApiError::invalid(subject, resource.kind, &[taken]));
        }
        tracing::debug!(attempt, key, "allocation raced; retrying");
    }
    Err(ApiError::internal(
        "could not allocate resources for the object after several attempts",
    ))
}

/// Read-modify-write of one object with optimistic concurrency, the way every update goes.
/// `mutate` gets the current object (storage version, with resourceVersion) and returns the
/// desired one. `precondition` is a resourceVersion the caller requires.
pub async fn update_object(
    server: &Arc<ApiServer>,
    resource: &'static ResourceInfo,
    key: &str,
    subject: Subject<'_>,
    subresource: Option<&str>,
    dry_run: bool,
    mut mutate: impl FnMut(&Value) -> ApiResult<Value>,
) -> ApiResult<Value> {
    for _ in 0..MAX_RETRIES {
        let current = server
            .cache
            .get(resource, key)
            .ok_or_else(|| ApiError::not_found(Subject { ..subject }))?;
        let old = current.value();
        let mut new = mutate(&old)?;
        if let Some(rv) = new
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && !rv.is_empty()
            && rv != current.mod_revision.to_string()
        {
            return Err(ApiError::stale(subject));
        }
        strategy::prepare_update(resource, subresource, &mut new, &old)?;
        if resource.plural == "services" && resource.group.is_empty() && subresource.is_none() {
            strategy::prepare_service_update(server, &mut new, &old)?;
        }
        // A binding sets spec.nodeName, which pod updates may not; `bind` checks its own rules.
        let errors = if subresource == Some("binding") {
            Vec::new()
        } else {
            api::validation::validate_update(resource, &new, &old)
        };
        if !errors.is_empty() {
            return Err(ApiError::invalid(subject, resource.kind, &errors));
        }
        let (old_res, new_res) = (
            strategy::reservations(resource, &old),
            strategy::reservations(resource, &new),
        );
        // Removing the last finalizer of an object being deleted deletes it.
        let finished = strategy::deletion_finished(&new);
        set_rv(&mut new, current.mod_revision);
        if new == old {
            return Ok(new);
        }
        if dry_run {
            return Ok(new);
        }
        let mut compares = vec![Compare {
            key: key.to_string(),
            mod_revision: current.mod_revision,
        }];
        let mut ops = Vec::new();
        if finished {
            ops.push(Op::Delete {
                key: key.to_string(),
            });
            for r in &old_res {
                ops.push(Op::Delete { key: r.clone() });
            }
        } else {
            ops.push(Op::Put {
                key: key.to_string(),
                value: stored_bytes(&new),
            });
            for r in new_res.iter().filter(|r| !old_res.contains(r)) {
                compares.push(Compare {
                    key: r.clone(),
                    mod_revision: 0,
                });
                ops.push(Op::Put {
                    key: r.clone(),
                    value: Bytes::from(key.to_string()),
                });
            }
            for r in old_res.iter().filter(|r| !new_res.contains(r)) {
                ops.push(Op::Delete { key: r.clone() });
            }
        }
        let started = std::time::Instant::now();
        let response = server.store.txn(compares, ops).await?;
        server
            .metrics
            .observe_store("update", started.elapsed().as_secs_f64());
        if response.succeeded {
            set_rv(&mut new, response.revision);
            server
                .cache
                .wait_for(response.revision, Duration::from_secs(5))
                .await;
            return Ok(new);
        }
        match response.prev.first() {
            Some(None) => return Err(ApiError::not_found(subject)),
            Some(Some(kv)) if kv.mod_revision != current.mod_revision => {
                // Our cached copy was stale: wait for the cache and try again.
                server
                    .cache
                    .wait_for(kv.mod_revision, Duration::from_secs(2))
                    .await;
            }
            _ => {
                let taken: Vec<String> = new_res
                    .iter()
                    .filter(|r| !old_res.contains(r))
                    .cloned()
                    .collect();
                return Err(ApiError::invalid(
                    subject,
                    resource.kind,
                    &[api::FieldError::forbidden(
                        "spec",
                        format!("allocation already in use: {}", taken.join(", ")),
                    )],
                ));
            }
        }
    }
    Err(ApiError::stale(subject))
}

async fn update(ctx: &Ctx<'_>, content_type: &str, body: &[u8]) -> ApiResult<Response<Body>> {
    let (obj, warnings) = decode_body(ctx, content_type, body)?;
    let name = ctx.name().to_string();
    let body_name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let (Some(ns), Some(body_ns)) = (
        &ctx.target.namespace,
        obj.pointer("/metadata/namespace").and_then(Value::as_str),
    ) && ns != body_ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let resource = ctx.resource();
    let storage = storage_row(resource);
    let desired = to_storage(resource, obj)?;
    let updated = update_object(
        ctx.server,
        storage,
        &ctx.key(),
        ctx.subject(&name),
        ctx.target.subresource.as_deref(),
        ctx.dry_run,
        |_| Ok(desired.clone()),
    )
    .await?;
    let updated = to_served(resource, updated)?;
    Ok(with_warnings(
        render_value(ctx, StatusCode::OK, &updated)?,
        &warnings,
    ))
}

fn patch_error(e: api::patch::PatchError) -> ApiError {
    let code = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(code, e.reason(), e.to_string())
}

async fn patch(ctx: &Ctx<'_>, content_type: &str, body: &[u8]) -> ApiResult<Response<Body>> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let patch_type = api::patch::PatchType::from_content_type(media)
        .ok_or_else(|| ApiError::unsupported_media_type(media))?;
    let validation =
        FieldValidation::parse(ctx.query.get("fieldValidation")).map_err(decode_error)?;
    let resource = ctx.resource();
    let storage = storage_row(resource);
    let name = ctx.name().to_string();
    let field_manager = ctx.query.get("fieldManager").unwrap_or("").to_string();
    let apply_options = api::patch::ApplyOptions {
        field_manager: &field_manager,
        force: ctx.query.flag("force"),
    };
    let apply = |base: &Value| -> ApiResult<Value> {
        match patch_type {
            api::patch::PatchType::Apply => {
                api::patch::server_side_apply(resource, base, body, &apply_options)
                    .map_err(patch_error)
            }
            other => api::patch::apply_patch(resource, base, other, body).map_err(patch_error),
        }
    };
    // Server-side apply creates what does not exist yet.
    if patch_type == api::patch::PatchType::Apply
        && ctx.server.cache.get(storage, &ctx.key()).is_none()
    {
        let applied = apply(&json!({}))?;
        let bytes = serde_json::to_vec(&applied).expect("serializes");
        let decoded = api::decode::decode(resource, &bytes, validation).map_err(decode_error)?;
        if decoded
            .object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            != Some(name.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object does not match the name on the URL ({name})"
            )));
        }
        let obj = to_storage(resource, decoded.object)?;
        let created = create_object(
            ctx.server,
            storage,
            ctx.target.namespace.as_deref(),
            obj,
            &ctx.user,
            ctx.dry_run,
        )
        .await?;
        let created = to_served(resource, created)?;
        return Ok(with_warnings(
            render_value(ctx, StatusCode::CREATED, &created)?,
            &decoded.warnings,
        ));
    }
    let mut warnings = Vec::new();
    let updated = update_object(
        ctx.server,
        storage,
        &ctx.key(),
        ctx.subject(&name),
        ctx.target.subresource.as_deref(),
        ctx.dry_run,
        |current| {
            let served = to_served(resource, current.clone())?;
            let patched = apply(&served)?;
            let bytes = serde_json::to_vec(&patched).expect("serializes");
            let decoded =
                api::decode::decode(resource, &bytes, validation).map_err(decode_error)?;
            warnings = decoded.warnings;
            let mut desired = to_storage(resource, decoded.object)?;
            // A patch that does not mention the resourceVersion is not a precondition.
            if served.pointer("/metadata/resourceVersion")
                == desired.pointer("/metadata/resourceVersion")
                && let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut)
            {
                meta.remove("resourceVersion");
            }
            Ok(desired)
        },
    )
    .await?;
    let updated = to_served(resource, updated)?;
    Ok(with_warnings(
        render_value(ctx, StatusCode::OK, &updated)?,
        &warnings,
    ))
}

// ---------------------------------------------------------------------------------------------
// Scale and binding.

fn scale_of(resource: &ResourceInfo, obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| match s {
            // ReplicationControllers have a plain map selector.
            Value::Object(m)
                if !m.contains_key("matchLabels") && !m.contains_key("matchExpressions") =>
            {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            }
            other => serde_json::from_value::<
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
            >(other.clone())
            .ok()
            .and_then(|s| LabelSelector::from_label_selector(&s).ok())
            .map(|s| s.to_string())
            .unwrap_or_default(),
        })
        .unwrap_or_default();
    let meta = &obj["metadata"];
    let _ = resource;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

async fn get_scale(ctx: &Ctx<'_>) -> ApiResult<Response<Body>> {
    ctx.server.cache.sync().await?;
    let obj = ctx
        .server
        .cache
        .get(ctx.resource(), &ctx.key())
        .ok_or_else(|| ApiError::not_found(ctx.subject(ctx.name())))?;
    Ok(crate::http::json(
        StatusCode::OK,
        &scale_of(ctx.resource(), &obj.value()),
    ))
}

async fn update_scale(
    ctx: &Ctx<'_>,
    patch_type: Option<&str>,
    body: &[u8],
) -> ApiResult<Response<Body>> {
    let resource = ctx.resource();
    let name = ctx.name().to_string();
    let updated = update_object(
        ctx.server,
        resource,
        &ctx.key(),
        ctx.subject(&name),
        Some("scale"),
        ctx.dry_run,
        |current| {
            let scale = scale_of(resource, current);
            let desired_scale: Value = match patch_type {
                None => serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("decoding Scale: {e}")))?,
                Some(ct) => {
                    let media = ct.split(';').next().unwrap_or("").trim();
                    let pt = api::patch::PatchType::from_content_type(media)
                        .ok_or_else(|| ApiError::unsupported_media_type(media))?;
                    let scale_info =
                        api::resources::lookup("autoscaling", "v1", "horizontalpodautoscalers")
                            .expect("registered");
                    api::patch::apply_patch(scale_info, &scale, pt, body)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?
                }
            };
            if let Some(rv) = desired_scale
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                && patch_type.is_none()
                && !rv.is_empty()
                && Some(rv)
                    != current
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
            {
                return Err(ApiError::stale(ctx.subject(&name)));
            }
            let replicas = desired_scale
                .pointer("/spec/replicas")
                .cloned()
                .unwrap_or(json!(0));
            if replicas.as_i64().is_none_or(|r| r < 0) {
                return Err(ApiError::invalid(
                    ctx.subject(&name),
                    "Scale",
                    &[api::FieldError::invalid(
                        "spec.replicas",
                        &replicas,
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            let mut new = current.clone();
            new["spec"]["replicas"] = replicas;
            if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
            Ok(new)
        },
    )
    .await?;
    Ok(crate::http::json(
        StatusCode::OK,
        &scale_of(resource, &updated),
    ))
}

async fn bind(ctx: &Ctx<'_>, body: &[u8]) -> ApiResult<Response<Body>> {
    let binding: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("decoding Binding: {e}")))?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = ctx.name().to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            ctx.subject(&name),
            "Binding",
            &[api::FieldError::required("target.name", "")],
        ));
    }
    let resource = ctx.resource();
    update_object(
        ctx.server,
        resource,
        &ctx.key(),
        ctx.subject(&name),
        Some("binding"),
        ctx.dry_run,
        |current| {
            if current.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::conflict(
                    ctx.subject(&name),
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            if let Some(existing) = current
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError::conflict(
                    ctx.subject(&name),
                    &format!("pod {name} is already assigned to node {existing:?}"),
                ));
            }
            let mut new = current.clone();
            new["spec"]["nodeName"] = json!(node);
            strategy::set_condition(&mut new, "PodScheduled", "True", None);
            if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
            Ok(new)
        },
    )
    .await?;
    Ok(crate::http::json(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

async fn evict(ctx: &Ctx<'_>) -> ApiResult<Response<Body>> {
    crate::admission::admit_eviction(
        ctx.server,
        ctx.target.namespace.as_deref().unwrap_or_default(),
        ctx.name(),
    )
    .await?;
    let options = DeleteOptions::default();
    delete_one(
        ctx.server,
        ctx.resource(),
        &ctx.key(),
        ctx.subject(ctx.name()),
        &options,
    )
    .await?;
    Ok(crate::http::json(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Deletes.

#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    fn from_request(query: &Query, body: &[u8], dry_run: bool) -> ApiResult<Self> {
        let mut options = DeleteOptions {
            dry_run,
            ..Default::default()
        };
        if !body.iter().all(u8::is_ascii_whitespace) {
            let parsed: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("decoding DeleteOptions: {e}")))?;
            options.grace_period_seconds = parsed.get("gracePeriodSeconds").and_then(Value::as_i64);
            options.propagation_policy = parsed
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(String::from);
            if parsed.get("orphanDependents").and_then(Value::as_bool) == Some(true)
                && options.propagation_policy.is_none()
            {
                options.propagation_policy = Some("Orphan".into());
            }
            options.precondition_uid = parsed
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from);
            options.precondition_rv = parsed
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
            if parsed
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "All"))
            {
                options.dry_run = true;
            }
        }
        if let Some(grace) = query.int("gracePeriodSeconds")? {
            options.grace_period_seconds = Some(grace);
        }
        if let Some(policy) = query.get("propagationPolicy") {
            options.propagation_policy = Some(policy.to_string());
        }
        if let Some(policy) = &options.propagation_policy
            && !matches!(policy.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::invalid(
                Subject {
                    group: "",
                    resource: "",
                    name: "",
                },
                "DeleteOptions",
                &[api::FieldError::not_supported(
                    "propagationPolicy",
                    &json!(policy),
                    &["Foreground", "Background", "Orphan"],
                )],
            ));
        }
        Ok(options)
    }
}

/// Delete one object: finalizers and graceful deletion leave it in place with a
/// deletionTimestamp; otherwise it is removed. Returns the object and whether it is gone.
pub async fn delete_one(
    server: &Arc<ApiServer>,
    resource: &'static ResourceInfo,
    key: &str,
    subject: Subject<'_>,
    options: &DeleteOptions,
) -> ApiResult<(Value, bool)> {
    for _ in 0..MAX_RETRIES {
        let current = server
            .cache
            .get(resource, key)
            .ok_or_else(|| ApiError::not_found(Subject { ..subject }))?;
        let mut obj = current.value();
        if let Some(uid) = &options.precondition_uid
            && obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
        {
            return Err(ApiError::conflict(
                subject,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    obj.pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = &options.precondition_rv
            && *rv != current.mod_revision.to_string()
        {
            return Err(ApiError::conflict(
                subject,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    current.mod_revision
                ),
            ));
        }
        let plan = strategy::plan_delete(resource, &mut obj, options);
        if options.dry_run {
            return Ok((obj, plan == strategy::DeletePlan::Remove));
        }
        let mut ops = Vec::new();
        let gone = plan == strategy::DeletePlan::Remove;
        if gone {
            ops.push(Op::Delete {
                key: key.to_string(),
            });
            for r in strategy::reservations(resource, &obj) {
                ops.push(Op::Delete { key: r });
            }
        } else if plan == strategy::DeletePlan::Mark {
            ops.push(Op::Put {
                key: key.to_string(),
                value: stored_bytes(&obj),
            });
        } else {
            // Already being deleted and nothing changes.
            return Ok((obj, false));
        }
        let response = server
            .store
            .txn(
                vec![Compare {
                    key: key.to_string(),
                    mod_revision: current.mod_revision,
                }],
                ops,
            )
            .await?;
        if response.succeeded {
            set_rv(&mut obj, response.revision);
            server
                .cache
                .wait_for(response.revision, Duration::from_secs(5))
                .await;
            return Ok((obj, gone));
        }
        match response.prev.first() {
            Some(None) => return Err(ApiError::not_found(subject)),
            Some(Some(kv)) => {
                server
                    .cache
                    .wait_for(kv.mod_revision, Duration::from_secs(2))
                    .await;
            }
            None => {}
        }
    }
    Err(ApiError::stale(subject))
}

/// Resources whose delete answers with the object rather than a Status (as upstream's registries do).
fn returns_deleted_object(resource: &ResourceInfo) -> bool {
    matches!(
        resource.plural,
        "pods" | "serviceaccounts" | "storageclasses" | "services" | "namespaces"
    )
}

async fn delete(ctx: &Ctx<'_>, body: &[u8]) -> ApiResult<Response<Body>> {
    let options = DeleteOptions::from_request(&ctx.query, body, ctx.dry_run)?;
    let resource = ctx.resource();
    let storage = storage_row(resource);
    let name = ctx.name().to_string();
    strategy::check_deletable(resource, &name)?;
    let (obj, gone) = delete_one(
        ctx.server,
        storage,
        &ctx.key(),
        ctx.subject(&name),
        &options,
    )
    .await?;
    let obj = to_served(resource, obj)?;
    if !gone || returns_deleted_object(resource) {
        let code = if gone {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        let code = if ctx.dry_run { StatusCode::OK } else { code };
        return render_value(ctx, code, &obj);
    }
    let mut details = json!({"name": name, "kind": resource.plural, "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)});
    if !resource.group.is_empty() {
        details["group"] = json!(resource.group);
    }
    Ok(crate::http::json(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
    ))
}

async fn delete_collection(ctx: &Ctx<'_>, body: &[u8]) -> ApiResult<Response<Body>> {
    let options = DeleteOptions::from_request(&ctx.query, body, ctx.dry_run)?;
    let resource = ctx.resource();
    let storage = storage_row(resource);
    let filter = Filter::from_query(resource, &ctx.query, None)?;
    ctx.server.cache.sync().await?;
    let prefix = resource.prefix(ctx.target.namespace.as_deref());
    let (items, revision, _) = ctx
        .server
        .cache
        .list(storage, &prefix, None, 0, |o| filter.matches(o));
    let mut deleted = Vec::new();
    for item in &items {
        let value = item.value();
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match delete_one(ctx.server, storage, &item.key, ctx.subject(&name), &options).await {
            Ok(_) => deleted.push(item.clone()),
            Err(e) if e.code == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    render_list(ctx, &deleted, revision, None)
}
