// A device's security status as the agent reports it (a `security_status`
// event, daily and on change; proto `SecurityStatusEvent`), read from the
// event's `detail.security_status`, and how the console rates each part:
// `bad` wants action now, `warn` wants a look, `ok` is fine.

import { count, field, flag, object, text } from './proto3';

export interface SecurityStatus {
  /** The OS release and kernel ("Debian GNU/Linux 13 (trixie), Linux 6.12.…"). */
  patchLevel: string;
  pendingUpdates: number;
  /** Of `pendingUpdates`, those from a security suite. */
  pendingSecurityUpdates: number;
  /** Empty when the agent found no antivirus. */
  antivirusProduct: string;
  antivirusEnabled: boolean;
  antivirusSignatureVersion: string;
  antivirusUpToDate: boolean;
  antivirusSignatureAgeDays: number;
  firewallActive: boolean;
  /** What filters ("ufw", "nftables"). */
  firewall: string;
  diskEncrypted: boolean;
  /** How the system disk is encrypted ("LUKS (dm-crypt) on /"). */
  diskEncryption: string;
}

export function securityStatus(detail: unknown): SecurityStatus {
  const s = object(field(object(detail), 'security_status'));
  return {
    patchLevel: text(field(s, 'patch_level')),
    pendingUpdates: count(field(s, 'pending_updates')),
    pendingSecurityUpdates: count(field(s, 'pending_security_updates')),
    antivirusProduct: text(field(s, 'antivirus_product')),
    antivirusEnabled: flag(field(s, 'antivirus_enabled')),
    antivirusSignatureVersion: text(field(s, 'antivirus_signature_version')),
    antivirusUpToDate: flag(field(s, 'antivirus_up_to_date')),
    antivirusSignatureAgeDays: count(field(s, 'antivirus_signature_age_days')),
    firewallActive: flag(field(s, 'firewall_active')),
    firewall: text(field(s, 'firewall')),
    diskEncrypted: flag(field(s, 'disk_encrypted')),
    diskEncryption: text(field(s, 'disk_encryption')),
  };
}

export type Level = 'ok' | 'warn' | 'bad';

/** The badge colour of each level. */
export const LEVEL_COLOR: Record<Level, string> = { ok: 'teal', warn: 'orange', bad: 'red' };

/** A pending security update is a known hole; other updates can wait a little. */
export function updatesLevel(s: SecurityStatus): Level {
  if (s.pendingSecurityUpdates > 0) return 'bad';
  return s.pendingUpdates > 0 ? 'warn' : 'ok';
}

/** No antivirus, or one switched off, protects nothing; old signatures
 * miss what is new. */
export function antivirusLevel(s: SecurityStatus): Level {
  if (!s.antivirusProduct || !s.antivirusEnabled) return 'bad';
  return s.antivirusUpToDate ? 'ok' : 'warn';
}

export function firewallLevel(s: SecurityStatus): Level {
  return s.firewallActive ? 'ok' : 'bad';
}

/** An unencrypted disk is a risk when the PC is lost, not while it is in use. */
export function diskLevel(s: SecurityStatus): Level {
  return s.diskEncrypted ? 'ok' : 'warn';
}
