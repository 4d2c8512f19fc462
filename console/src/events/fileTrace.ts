// The file trace as the console links to it and reads it: the console's
// route takes the API's query (`event`, `device` + `path`, or `sha256`),
// so an alarm's `file_trace` (an API path) maps onto it; a file event's
// `detail.file` is proto3 JSON with default fields left out, read here
// field by field so a missing or odd field shows as nothing.

import { count, field, flag, object, text } from './proto3';

/** Where a trace starts: the same parameters as `GET /api/v1/files/trace`. */
export type TraceStart = { event: string } | { device: string; path: string } | { sha256: string };

const START_KEYS = ['event', 'device', 'path', 'sha256'] as const;

/** The console's page of a trace. */
export function traceLink(start: TraceStart): string {
  return `/files/trace?${new URLSearchParams(start as Record<string, string>).toString()}`;
}

/** The console's page for an API path of the trace (an alarm's
 * `file_trace`); only the trace's own parameters are carried over. Null
 * when the path is not the trace's. */
export function traceRoute(apiPath: string): string | null {
  const at = apiPath.indexOf('?');
  const path = at < 0 ? apiPath : apiPath.slice(0, at);
  if (path !== '/api/v1/files/trace') return null;
  const given = new URLSearchParams(at < 0 ? '' : apiPath.slice(at + 1));
  const kept = new URLSearchParams();
  for (const k of START_KEYS) {
    const v = given.get(k);
    if (v) kept.set(k, v);
  }
  const q = kept.toString();
  return q ? `/files/trace?${q}` : null;
}

/** The trace's parameters in a page's query (absent ones left out, so the
 * API names what is missing). */
export function startOf(params: URLSearchParams): Partial<Record<(typeof START_KEYS)[number], string>> {
  const start: Partial<Record<(typeof START_KEYS)[number], string>> = {};
  for (const k of START_KEYS) {
    const v = params.get(k);
    if (v) start[k] = v;
  }
  return start;
}

/** What a file event's `detail.file` says, as far as the trace shows it. */
export interface FileDetail {
  targetPath: string;
  /** SHA-256 of the content in hex (64 digits), or empty. */
  sha256: string;
  /** Hashed over size, head and tail only (a file above the agent's bound). */
  partialHash: boolean;
  exe: string;
  pid: number;
  removable: boolean;
  vendor: string;
  product: string;
  serial: string;
  summarized: number;
}

/** A 32-byte hash from proto3 JSON (standard or URL-safe base64) in hex;
 * empty when it is not one. */
export function hexOfBase64(b64: string): string {
  let bytes: string;
  try {
    bytes = atob(b64.replace(/-/g, '+').replace(/_/g, '/'));
  } catch {
    return '';
  }
  if (bytes.length !== 32) return '';
  let hex = '';
  for (let i = 0; i < bytes.length; i++) hex += bytes.charCodeAt(i).toString(16).padStart(2, '0');
  return hex;
}

export function fileDetail(detail: unknown): FileDetail {
  const f = object(field(object(detail), 'file'));
  return {
    targetPath: text(field(f, 'target_path')),
    sha256: hexOfBase64(text(field(f, 'sha256'))),
    partialHash: field(f, 'hash_method') === 'HASH_METHOD_SIZE_HEAD_TAIL',
    exe: text(field(f, 'process_exe_path')),
    pid: count(field(f, 'pid')),
    removable: flag(field(f, 'removable_media')),
    vendor: text(field(f, 'medium_vendor_id')),
    product: text(field(f, 'medium_product_id')),
    serial: text(field(f, 'medium_serial')),
    summarized: count(field(f, 'summarized')),
  };
}
