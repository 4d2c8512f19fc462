import type { Schemas } from '../api/client';

/** Every event kind, in the order the filter offers them (the same list
 * as the OpenAPI document's `EventKind`, checked by the type below). */
export const EVENT_KINDS = [
  'logon',
  'logoff',
  'lock',
  'unlock',
  'boot',
  'shutdown',
  'suspend',
  'resume',
  'process_start',
  'process_stop',
  'process_blocked',
  'file_create',
  'file_modify',
  'file_copy',
  'file_move',
  'file_rename',
  'file_delete',
  'file_read',
  'device_connect',
  'device_disconnect',
  'device_blocked',
  'print',
  'web_access',
  'network_connect',
  'software_installed',
  'software_removed',
  'software_updated',
  'inventory',
  'environment_change',
  'security_status',
  'lan_sighting',
  'collector_warning',
  'agent_started',
  'agent_stopping',
  'uninstall_refused',
  'uninstall_allowed',
] as const satisfies readonly Schemas['EventKind'][];

// A kind added to the API and not here fails to compile.
type Missing = Exclude<Schemas['EventKind'], (typeof EVENT_KINDS)[number]>;
export const ALL_KINDS_LISTED: Missing extends never ? true : false = true;

/** The kinds of file operations (those the file trace follows). */
export const FILE_KINDS: readonly string[] = EVENT_KINDS.filter((k) => k.startsWith('file_'));

export function isFileKind(kind: string): boolean {
  return FILE_KINDS.includes(kind);
}
