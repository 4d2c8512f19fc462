import { useState } from 'react';
import type { FormEvent } from 'react';

/** A form's submit: runs `action`, tracks whether it is busy and the
 * message of its error (the API's, which names the bad field). */
export function useSubmit(action: () => Promise<void>) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const onSubmit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, onSubmit };
}
