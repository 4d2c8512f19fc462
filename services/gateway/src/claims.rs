//! The access token's claims and the roles they carry.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a user may do. MSP roles belong to an MSP organisation and act on
/// its tenants; the others belong to one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the MSP organisation: its tenants, users and access lists.
    MspAdmin,
    /// Acts as an administrator on the tenants on its access list.
    MspTechnician,
    /// Administers one tenant.
    TenantAdmin,
    /// Reads one tenant's logs, alarms and reports; changes nothing.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MspAdmin => "msp_admin",
            Self::MspTechnician => "msp_technician",
            Self::TenantAdmin => "tenant_admin",
            Self::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "msp_admin" => Self::MspAdmin,
            "msp_technician" => Self::MspTechnician,
            "tenant_admin" => Self::TenantAdmin,
            "auditor" => Self::Auditor,
            _ => return None,
        })
    }

    pub fn is_msp(self) -> bool {
        matches!(self, Self::MspAdmin | Self::MspTechnician)
    }
}

/// The claims of a Mamori access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub email: String,
    pub role: Role,
    /// The user's tenant (tenant roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<Uuid>,
    /// The user's MSP organisation (MSP roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Uuid>,
    /// The user's session epoch when the token was issued: the token stops
    /// working once the epoch moves on (see `crate::sessions`).
    #[serde(default)]
    pub sep: i32,
    /// The login (refresh-token family) the token belongs to: a logout of
    /// that login ends the token too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<Uuid>,
}
