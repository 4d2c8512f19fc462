//! The registry of who may talk to Mamori: tenants, users, enrollment
//! tokens and devices, and what administrators do to them (one domain layer
//! for the REST API and the operator's command line alike).
//!
//! Secrets (enrollment tokens, device credentials) are 256-bit random values
//! shown once; only their SHA-256 is stored, so a database dump cannot be
//! replayed. Every query runs as the application role inside a tenant
//! transaction; the few look-ups that must happen before the tenant is known
//! go through SECURITY DEFINER functions that take the secret's hash.

mod devices;
mod error;
pub mod manage;
pub mod password;
mod secret;
pub mod signing_keys;
mod tenants;
mod tokens;
pub mod users;

pub use devices::{
    AuthenticatedDevice, Device, Enrolled, MachineFacts, authenticate, enroll, list_devices,
    revoked_since,
};
pub use error::{Error, Result};
pub use secret::{
    DeviceCredential, EnrollmentToken, HandoverCode, InvitationSecret, PasswordResetCode,
    RecipientSecret, RefreshToken, UninstallCode, VerificationSecret,
};
pub use tenants::{Tenant, create_tenant, get_tenant, insert_tenant, set_device_limit};
pub use tokens::{CreatedToken, TokenInfo, create_token, create_token_in, list_tokens};
