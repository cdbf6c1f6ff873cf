//! The typed HTTP contract of the service API (`/service/v1`) and the admin API
//! (`/admin/api`): the body of every answer, shared by the server, the CLI and the
//! tests, and the OpenAPI 3.1 documents generated from these types and the routes'
//! annotations ([`service_openapi`] at `/service/v1/openapi.json`, [`admin_openapi`]
//! at `/admin/api/openapi.json`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sessiond::error::{ErrorBody, ErrorCode};
pub use sessiond_mobile::apps::{AppSummary, RefreshError, RefreshReport, SessionSummary};
use sessiond_store::{PrivilegeChange, Snapshot};

use crate::console::{AuditEntry, Via};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{OpenApi, ToSchema};

/// A session as the service and browser APIs show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// The session id (32 hex digits).
    pub id: String,
    /// `Session.userName`.
    pub user_name: String,
    /// `Session.isGuest()`.
    pub is_guest: bool,
    /// `Session.getPrivileges()`: the privileges held, with those they include.
    pub privileges: Vec<String>,
    /// `Session.expirationDate` (ISO 8601), `null` for sessions that do not expire.
    pub expiration_date: Option<String>,
    /// `Session.idleTimeout` in minutes (web sessions; `null` for the others).
    pub idle_timeout: Option<u32>,
    /// `Session.info`.
    pub info: SessionInfo,
}

impl SessionView {
    /// The view of a session (`force_login`: the roles file's `forceLogin`).
    pub fn of(s: &Snapshot, force_login: bool) -> Self {
        let r = &s.record;
        let web = r.kind() == sessiond_core::SessionKind::Web;
        Self {
            id: r.id().to_string(),
            user_name: r.user_name().to_string(),
            is_guest: r.is_guest(force_login),
            privileges: r.get_privileges(),
            expiration_date: s.expiration_date(),
            idle_timeout: web.then_some(r.idle_timeout()),
            info: serde_json::from_value(r.info()).expect("Session.info has this shape"),
        }
    }
}

/// `Session.info` (4D's members and names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// `web`, `remote` or `storedProcedure`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The session's user name.
    #[serde(rename = "userName")]
    pub user_name: String,
    /// When the session was created (ISO 8601).
    #[serde(rename = "creationDateTime")]
    pub creation_date_time: String,
    /// The session id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The client machine's name (empty for web sessions).
    #[serde(rename = "machineName")]
    pub machine_name: String,
    /// `browser` for web sessions; the client's system for remote ones.
    #[serde(rename = "hostType")]
    pub host_type: String,
    /// `active`, `sleeping` or `postponed`.
    pub state: String,
    /// The client's address (web and remote sessions).
    #[serde(rename = "IPAddress", default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The operating-system user of a remote client.
    #[serde(
        rename = "systemUserName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub system_user_name: Option<String>,
    /// The id a remote client resumes its session with.
    #[serde(
        rename = "persistentID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub persistent_id: Option<String>,
}

/// `DELETE /sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// Always `true` (an unknown session is a 404).
    pub deleted: bool,
}

/// `GET /sessions/{id}/privileges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrivilegeList {
    /// `Session.getPrivileges()`.
    pub privileges: Vec<String>,
}

/// `GET /sessions/{id}/privileges/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrivilegeCheck {
    /// The privilege asked about.
    pub privilege: String,
    /// `Session.hasPrivilege(name)`.
    pub granted: bool,
}

/// A session cookie for the client, when a change issued one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CookieView {
    /// `4DSID_<AppName>`.
    pub name: String,
    /// The value to set.
    pub value: String,
}

/// `PUT` / `DELETE /sessions/{id}/privileges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrivilegeChangeView {
    /// `setPrivileges()`'s result (`false` on the stored-procedures session).
    pub applied: bool,
    /// Names not declared in roles.json (ignored).
    pub unknown: Vec<String>,
    /// The privileges now held.
    pub privileges: Vec<String>,
    /// The user name now.
    pub user_name: String,
    /// Whether the session is a guest now.
    pub is_guest: bool,
    /// A raise ends every cookie of the session: the new one for the client.
    pub cookie: Option<CookieView>,
}

impl PrivilegeChangeView {
    /// The view of a change (`cookie_name`: the session cookie's name).
    pub fn of(change: &PrivilegeChange, cookie_name: &str, force_login: bool) -> Self {
        let r = &change.snapshot.record;
        Self {
            applied: change.outcome.applied,
            unknown: change.outcome.unknown.clone(),
            privileges: r.get_privileges(),
            user_name: r.user_name().to_string(),
            is_guest: r.is_guest(force_login),
            cookie: change.cookie.as_ref().map(|c| CookieView {
                name: cookie_name.to_string(),
                value: c.encode(),
            }),
        }
    }
}

/// `GET` / `PATCH /sessions/{id}/storage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StorageView {
    /// The storage version (for `If-Match`).
    pub version: u64,
    /// `Session.storage`.
    pub storage: Map<String, Value>,
}

impl StorageView {
    /// The storage of a session.
    pub fn of(s: &Snapshot) -> Self {
        Self {
            version: s.record.storage_version(),
            storage: (**s.record.storage()).clone(),
        }
    }
}

/// `POST /sessions/{id}/storage/increment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Incremented {
    /// The value after the increment.
    #[schema(schema_with = number)]
    pub value: Value,
    /// The storage version after it.
    pub version: u64,
}

/// `POST /sessions/{id}/otp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OtpView {
    /// The one-time token (empty when the session cannot make one).
    pub token: String,
}

/// `POST /otp/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Restored {
    /// The session the token opened.
    pub id: String,
    /// The cookie that opens it from now on.
    pub cookie: CookieView,
}

/// `GET /activity`: 4D's `Process activity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Activity {
    /// The sessions (`Session.info` with `privileges`, `expirationDate`, `node`);
    /// absent with `mode=processes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub sessions: Option<Vec<Value>>,
    /// The processes of remote and stored-procedure sessions; absent with
    /// `mode=sessions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub processes: Option<Vec<Value>>,
}

/// `POST /stored-procedures/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcedureRun {
    /// The process number.
    pub process: u64,
    /// What the procedure returned (absent with `wait=false`, answered 202).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

/// A JSON number (an increment's value).
fn number() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Number)
        .build()
}

/// `GET /mobile/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MobileAppList {
    /// The app folders under `MobileApps`.
    pub apps: Vec<AppSummary>,
}

/// `GET /mobile/apps/{folder}/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MobileSessionList {
    /// The app's session files.
    pub sessions: Vec<SessionSummary>,
}

/// `GET /mobile/apps/{folder}/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MobileFile {
    /// The file's path on the server.
    pub path: String,
    /// Its JSON, as 4D writes it.
    pub json: Map<String, Value>,
}

/// An edit of a mobile session file (`status`, `email`, `DELETE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MobileEdit {
    /// The file after the edit (absent after a delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Map<String, Value>>,
    /// `true` after a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// Whether the running server still has to be pushed (`?apply=true` pushes at once).
    pub push_needed: bool,
    /// The push's report, with `?apply=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<RefreshReport>,
}

/// `GET /me`: who is signed in, and what the console needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// Always `admin`.
    pub who: String,
    /// How this request was authenticated.
    pub via: Via,
    /// The CSRF token of a console session (`null` with a bearer).
    pub csrf: Option<String>,
    /// The application name.
    pub app: String,
    /// Whether mobile apps are enabled.
    pub mobile: bool,
    /// How often the events stream ticks, seconds.
    pub tick_seconds: u64,
}

/// A session in the live listing: the service API's view and its running calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LiveSession {
    /// The session.
    #[serde(flatten)]
    pub session: SessionView,
    /// The server-side calls running in it on this node.
    #[schema(value_type = Vec<Object>)]
    pub processes: Vec<Value>,
}

/// `GET /sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LiveSessions {
    /// Newest first, at most `limit`.
    pub sessions: Vec<LiveSession>,
    /// How many match the filter.
    pub total: usize,
    /// The server's time (ISO 8601).
    pub now: String,
}

/// `DELETE /users/{name}/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DroppedSessions {
    /// How many sessions of the user were ended.
    pub deleted: usize,
}

/// `GET /sessions/{id}/storage` (admin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionStorage {
    /// The session.
    pub id: String,
    /// The storage version.
    pub version: u64,
    /// `Session.storage`.
    pub storage: Map<String, Value>,
}

/// `GET /audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditLog {
    /// The newest entries, oldest first.
    pub entries: Vec<AuditEntry>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok`: the process answers.
    pub status: String,
}

/// `POST /admin/login` (the console's sign-in; the session cookie comes with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInAnswer {
    /// The value of `X-CSRF-Token` for the console's changes.
    pub csrf: String,
}

/// `POST /admin/logout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignOutAnswer {
    /// Always `true`.
    pub signed_out: bool,
}

/// `POST /api/logout` (the browser's own session ended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggedOut {
    /// Always `true`.
    pub logged_out: bool,
}

/// The answers of the mobile protocol (`/mobileapp/`), as 4D's iOS and Android SDKs
/// read them.
pub mod mobile {
    use serde::{Deserialize, Serialize};
    use serde_json::{Map, Value};
    use sessiond::error::ErrorCode;

    /// `$authenticate` and `$verify`, accepted or pending (no `token` then).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Authenticated {
        /// The session id.
        pub id: String,
        /// The Bearer token (absent while the session waits for validation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub token: Option<String>,
        /// Text for the app.
        pub status_text: String,
        /// The session's `userInfo` (absent while pending).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub user_info: Option<Map<String, Value>>,
        /// Always `true`.
        pub success: bool,
    }

    /// `GET /mobileapp/`, `$logout`, `$userInfo`, `$licensecheck`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Done {
        /// Always `true`.
        pub ok: bool,
        /// `true` where the SDKs look for it (`$userInfo`, `$licensecheck`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub success: Option<bool>,
    }

    /// One error as the SDKs list them.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ErrorItem {
        /// The text shown to the user.
        pub message: String,
        /// Always `mobi`.
        pub component_signature: String,
        /// 4D's mobile error number (1901 malformed, 1907 unauthorized, …).
        pub err_code: u32,
    }

    /// An error answer both SDKs understand (iOS reads `__ERRORS`, Android `__ERROR`),
    /// with sessiond's own `error` code beside them.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Failed {
        /// Always `false`.
        pub success: bool,
        /// The text shown to the user.
        pub status_text: String,
        /// The error, for iOS.
        #[serde(rename = "__ERRORS")]
        pub errors_ios: Vec<ErrorItem>,
        /// The same error, for Android.
        #[serde(rename = "__ERROR")]
        pub errors_android: Vec<ErrorItem>,
        /// sessiond's error code.
        pub error: ErrorCode,
        /// The same text.
        pub message: String,
    }

    impl Failed {
        /// The answer for `code`, 4D number `err_code`, shown as `text`.
        pub fn new(code: ErrorCode, err_code: u32, text: &str) -> Self {
            let errors = vec![ErrorItem {
                message: text.to_string(),
                component_signature: "mobi".into(),
                err_code,
            }];
            Self {
                success: false,
                status_text: text.to_string(),
                errors_ios: errors.clone(),
                errors_android: errors,
                error: code,
                message: text.to_string(),
            }
        }
    }
}

/// The service API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sessiond service API",
        description = "4D sessions for application backends in any language. Every route needs `Authorization: Bearer <API key>`. Errors are `{\"error\": <code>, \"message\": <text>}`; a request that fails changes nothing."
    ),
    paths(
        crate::routes::service::resolve,
        crate::routes::service::get_session,
        crate::routes::service::delete_session,
        crate::routes::service::get_privileges,
        crate::routes::service::set_privileges,
        crate::routes::service::clear_privileges,
        crate::routes::service::has_privilege,
        crate::routes::service::get_storage,
        crate::routes::service::patch_storage,
        crate::routes::service::increment,
        crate::routes::service::set_idle_timeout,
        crate::routes::service::create_otp,
        crate::routes::service::restore_otp,
        crate::routes::service::activity,
        crate::routes::service::stored_procedure,
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&ApiKey),
    security(("api_key" = []))
)]
struct ServiceApi;

/// Declares the bearer API key and the errors every service route can answer.
struct ApiKey;

impl utoipa::Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        add_common_errors(openapi);
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The service API key (`sessiond admin api-key` makes a new one).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The admin API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sessiond admin API",
        description = "The console's API and the Mobile Session Management of 4D (`sessiond mobile …`). Every route needs the admin credential: `Authorization: Bearer <admin password>`, or the console's session cookie with `X-CSRF-Token` on changes. Every change is written to the audit log. Errors are `{\"error\": <code>, \"message\": <text>}`."
    ),
    paths(
        crate::routes::admin::mobile::apps,
        crate::routes::admin::mobile::sessions,
        crate::routes::admin::mobile::show,
        crate::routes::admin::mobile::set_status,
        crate::routes::admin::mobile::set_email,
        crate::routes::admin::mobile::delete,
        crate::routes::admin::mobile::push,
        crate::routes::admin::sessions::me,
        crate::routes::admin::sessions::list_sessions,
        crate::routes::admin::sessions::drop_session,
        crate::routes::admin::sessions::storage,
        crate::routes::admin::sessions::drop_user,
        crate::routes::admin::mobile::download,
        crate::routes::admin::audit::audit_log,
        crate::routes::admin::events::events,
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&Credential),
    security(("admin" = []))
)]
struct AdminApi;

/// Declares the admin credential and the errors every admin route can answer.
struct Credential;

impl utoipa::Modify for Credential {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        add_common_errors(openapi);
        for item in openapi.paths.paths.values_mut() {
            let changes = [&mut item.put, &mut item.post, &mut item.delete];
            for op in changes.into_iter().flatten() {
                op.responses
                    .responses
                    .entry("403".into())
                    .or_insert_with(|| {
                        error_response("`csrf`: a console change without its X-CSRF-Token").into()
                    });
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin password (`sessiond admin password` sets it).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI 3.1 document of `/service/v1` (its paths relative to that prefix).
pub fn service_openapi() -> utoipa::openapi::OpenApi {
    versioned(ServiceApi::openapi(), "/service/v1")
}

/// The OpenAPI 3.1 document of `/admin/api` (its paths relative to that prefix).
pub fn admin_openapi() -> utoipa::openapi::OpenApi {
    versioned(AdminApi::openapi(), "/admin/api")
}

fn versioned(mut doc: utoipa::openapi::OpenApi, prefix: &str) -> utoipa::openapi::OpenApi {
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.servers = Some(vec![utoipa::openapi::Server::new(prefix)]);
    doc
}

/// The errors every route can answer: 401 (`unauthorized`), 503
/// (`store_unavailable`), and for a route that takes a body 400 (`invalid_json`),
/// 413 (`body_too_large`), 415 (`unsupported_media_type`) and 422 (`invalid_json`:
/// well-formed JSON of the wrong shape).
fn add_common_errors(openapi: &mut utoipa::openapi::OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            let mut common = vec![
                ("401", "`unauthorized`: no valid credential"),
                (
                    "503",
                    "`store_unavailable`: the session store cannot be reached",
                ),
            ];
            if op.request_body.is_some() {
                common.extend([
                    (
                        "400",
                        "`invalid_json` or `bad_request`: a malformed request",
                    ),
                    ("413", "`body_too_large`"),
                    ("415", "`unsupported_media_type`: not `application/json`"),
                    ("422", "`invalid_json`: JSON of the wrong shape"),
                ]);
            }
            for (status, text) in common {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error_response(text).into());
            }
        }
    }
}

/// An error answer: [`ErrorBody`] with `text` as its description.
fn error_response(text: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(text)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}
