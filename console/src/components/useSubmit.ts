import { useState } from 'react';
import type { FormEvent } from 'react';
import { ApiError } from '../api/client';

/** A form's submit: runs `action`, tracks whether it is busy and its
 * error. A refusal that names one of the form's `fields` is shown next to
 * that field (`fieldError('name')`); any other as the form's message
 * (`error`). */
export function useSubmit(action: () => Promise<void>, fields: readonly string[] = []) {
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<unknown>(null);
  const onSubmit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setFailure(null);
    try {
      await action();
    } catch (err) {
      setFailure(err);
    } finally {
      setBusy(false);
    }
  };
  const named = failure instanceof ApiError ? failure.field : null;
  const field = named !== null && fields.includes(named) ? named : null;
  const error = failure === null || field !== null ? null : failure instanceof Error ? failure.message : String(failure);
  const fieldError = (name: string): string | undefined =>
    failure instanceof ApiError && field === name ? failure.reason : undefined;
  return { busy, error, fieldError, onSubmit };
}

/** The API's message for `path` when `error` (a refusal's text, as
 * `useSubmit` gives it) names that field (`banned_apps[0].path: …`). */
export function messageAt(error: string | null, path: string): string | undefined {
  const m = error ? /^([A-Za-z0-9_.[\]]+): (.*)$/.exec(error) : null;
  return m && m[1] === path ? m[2] : undefined;
}
