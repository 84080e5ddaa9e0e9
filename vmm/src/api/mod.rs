//! The VMM's control API: HTTP/1.1 + JSON on a Unix socket.
//!
//! - `mod.rs` (here): the requests and responses the API thread exchanges
//!   with the event loop, and the channel that carries them;
//! - `routes.rs`: HTTP method + path + body → [`ApiRequest`], and the
//!   route table the checked-in OpenAPI document is tested against;
//! - `server.rs`: the API thread (hyper on a current-thread tokio runtime)
//!   and the socket's lifecycle (mode 0600, removed on exit).
//!
//! The API thread never touches the VM: it parses a request into an
//! [`ApiRequest`], sends it to the event loop and waits for the answer.
//! The event loop handles requests one at a time, so requests never race
//! each other or the VM's own events.

mod routes;
mod server;

use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use routes::{route_request, RouteTable, ROUTES};
pub use server::{bind_api_socket, ApiServer, ApiServerError};

/// The OpenAPI document describing this API, checked in beside the code.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the VM is doing, as Firecracker's `GET /` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// vCPUs are running the guest.
    Running,
    /// vCPUs are parked; the guest makes no progress.
    Paused,
}

/// `GET /`: Firecracker's `InstanceInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The instance id (`--id`).
    pub id: String,
    /// Running or paused.
    pub state: VmState,
    /// This VMM's version.
    pub vmm_version: String,
    /// `stratus-vmm`.
    pub app_name: String,
}

/// `PATCH /vm`: `{"state": "Paused" | "Resumed"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmStateChange {
    /// Park every vCPU.
    Paused,
    /// Run them again.
    Resumed,
}

/// `PUT /actions`: `{"action_type": …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Ctrl-Alt-Del on the guest's keyboard (the guest decides what to do;
    /// systemd reboots).
    SendCtrlAltDel,
    /// Press the ACPI power button: the guest shuts down cleanly and the
    /// VMM then exits 0.
    Shutdown,
    /// Reset the machine now, without asking the guest: the VMM exits with
    /// the reboot code (3), as when the guest reboots itself.
    Reboot,
}

/// `PATCH /drives/{drive_id}`: what may change on a running drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveUpdate {
    /// Must match the path's id when given (Firecracker's clients send it).
    #[serde(default)]
    pub drive_id: Option<String>,
    /// Firecracker lets a drive's backing file be swapped; Stratus does not.
    #[serde(default)]
    pub path_on_host: Option<String>,
    /// The drive's new limits; an absent bucket means "unlimited".
    #[serde(default)]
    pub rate_limiter: Option<stratus_devices::rate_limiter::RateLimiterConfig>,
}

/// A request from the API thread to the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    /// `GET /`.
    Describe,
    /// `GET /vm/config`.
    GetConfig,
    /// `PATCH /vm`.
    ChangeState(VmStateChange),
    /// `PUT /actions`.
    Act(Action),
    /// `GET /metrics`.
    Metrics,
    /// `GET /console?bytes=N`.
    Console {
        /// How many of the most recent bytes.
        bytes: usize,
    },
    /// `PATCH /drives/{drive_id}`.
    UpdateDrive {
        /// The path's drive id.
        id: String,
        /// The body.
        update: DriveUpdate,
    },
    /// `PUT /network-interfaces/{nic_id}/security-groups`.
    SetSecurityGroups {
        /// The path's NIC id.
        id: String,
        /// The NIC's groups from now on.
        config: Box<stratus_devices::net::filter::SecurityGroupsConfig>,
    },
    /// `PUT /metadata`.
    SetMetadata(Box<crate::nic_services::MetadataUpdate>),
}

/// The event loop's answer.
#[derive(Debug, Clone)]
pub enum ApiResponse {
    /// 204.
    NoContent,
    /// 200 with a JSON body.
    Json(serde_json::Value),
    /// 200 with the metrics, rendered as the client asked.
    Metrics(crate::runtime::MetricsSnapshot),
    /// 200 with raw console bytes.
    Console(Vec<u8>),
}

/// A refused request: an HTTP status and Firecracker's `fault_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// 4xx for the client's mistakes, 5xx for the VMM's.
    pub status: u16,
    /// One line saying what is wrong.
    pub message: String,
}

impl ApiError {
    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            message: message.into(),
        }
    }

    /// 409 Conflict: valid, but not in the VM's current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: 409,
            message: message.into(),
        }
    }

    /// 500: the VMM failed to do something it should have been able to.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            message: message.into(),
        }
    }
}

/// The result the event loop sends back.
pub type ApiResult = Result<ApiResponse, ApiError>;

/// One request in flight, with where its answer goes.
#[derive(Debug)]
pub struct ApiCall {
    /// The request.
    pub request: ApiRequest,
    /// Where the event loop answers (a tokio oneshot: sending needs no
    /// runtime, so the event loop stays plain).
    pub reply: tokio::sync::oneshot::Sender<ApiResult>,
}

/// The API thread's end of the channel to the event loop.
#[derive(Debug)]
pub struct ApiClient {
    calls: mpsc::Sender<ApiCall>,
    wake: EventFd,
}

/// The event loop's end: an eventfd to poll and the calls behind it.
#[derive(Debug)]
pub struct ApiInbox {
    calls: mpsc::Receiver<ApiCall>,
    wake: EventFd,
}

/// A connected client/inbox pair.
pub fn api_channel() -> std::io::Result<(ApiClient, ApiInbox)> {
    let wake = EventFd::new(EFD_NONBLOCK)?;
    let (tx, rx) = mpsc::channel();
    Ok((
        ApiClient {
            calls: tx,
            wake: wake.try_clone()?,
        },
        ApiInbox { calls: rx, wake },
    ))
}

impl ApiClient {
    /// Sends `request` to the event loop; the answer arrives on the
    /// returned receiver (an error there means the VMM is shutting down).
    pub fn send(&self, request: ApiRequest) -> tokio::sync::oneshot::Receiver<ApiResult> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.calls.send(ApiCall { request, reply }).is_ok() {
            // Fails only if the counter would overflow: already pending.
            let _ = self.wake.write(1);
        }
        answer
    }
}

impl ApiInbox {
    /// The eventfd the event loop polls.
    pub fn event(&self) -> &EventFd {
        &self.wake
    }

    /// Takes every waiting call (after the eventfd fired).
    pub fn drain(&self) -> impl Iterator<Item = ApiCall> + '_ {
        let _ = self.wake.read();
        self.calls.try_iter()
    }
}
