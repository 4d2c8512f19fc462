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

    /// What the role may do: the one table the handlers' extractors, `GET
    /// /me` (and so the console's controls) and the OpenAPI document's
    /// security scopes are read from.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Self::MspAdmin => &[ReadTenant, ManageTenant, IssueUninstallCode, ManageOrg],
            Self::MspTechnician => &[ReadTenant, ManageTenant],
            Self::TenantAdmin => &[ReadTenant, ManageTenant, HandOverTenant, IssueUninstallCode],
            Self::Auditor => &[ReadTenant],
        }
    }

    pub fn may(self, p: Permission) -> bool {
        self.permissions().contains(&p)
    }
}

/// A permission, as the OpenAPI document names it in each operation's
/// `bearer` security scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Read a tenant: devices, logs, alarms, policies, settings (MSP users
    /// on the tenants they reach).
    ReadTenant,
    /// Change a tenant: enrollment tokens, devices, groups, policies,
    /// users, webhooks, settings; acknowledge alarms; export logs.
    ManageTenant,
    /// Hand the tenant over to an MSP (its own administrator only).
    HandOverTenant,
    /// Issue the code that removing or stopping an agent on a PC needs
    /// (the tenant's administrator, and the administrator of the MSP that
    /// runs it; not technicians).
    IssueUninstallCode,
    /// Run an MSP organisation: its tenants, technicians and their access,
    /// policy templates.
    ManageOrg,
}

impl Permission {
    pub const ALL: [Self; 5] = [
        Self::ReadTenant,
        Self::ManageTenant,
        Self::HandOverTenant,
        Self::IssueUninstallCode,
        Self::ManageOrg,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadTenant => "read_tenant",
            Self::ManageTenant => "manage_tenant",
            Self::HandOverTenant => "hand_over_tenant",
            Self::IssueUninstallCode => "issue_uninstall_code",
            Self::ManageOrg => "manage_org",
        }
    }
}

/// The permission an `Acting<N>` extractor demands.
pub trait Need: Send + Sync + 'static {
    const PERMISSION: Permission;
}

/// Any role that reaches the tenant.
#[derive(Debug, Clone, Copy)]
pub struct Read;
/// Roles that change the tenant.
#[derive(Debug, Clone, Copy)]
pub struct Manage;
/// The tenant's own administrator.
#[derive(Debug, Clone, Copy)]
pub struct HandOver;

impl Need for Read {
    const PERMISSION: Permission = Permission::ReadTenant;
}
impl Need for Manage {
    const PERMISSION: Permission = Permission::ManageTenant;
}
impl Need for HandOver {
    const PERMISSION: Permission = Permission::HandOverTenant;
}
/// Administrators: the tenant's own, or its MSP's.
#[derive(Debug, Clone, Copy)]
pub struct IssueCode;
impl Need for IssueCode {
    const PERMISSION: Permission = Permission::IssueUninstallCode;
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
