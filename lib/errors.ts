/** An error about a file that laminate was asked to read: names the file and what is wrong. */
export class FormatError extends Error {
  override name = 'FormatError';
  constructor(
    readonly file: string,
    message: string,
    readonly tensor?: string,
  ) {
    super(`${file}: ${tensor !== undefined ? `tensor '${tensor}': ` : ''}${message}`);
  }
}

/** Thrown (or used to reject) when an AbortSignal stops a job. */
export function abortError(signal?: AbortSignal): Error {
  const reason: unknown = signal?.reason;
  if (reason instanceof Error && reason.name === 'AbortError') return reason;
  const err = new Error('The operation was aborted', reason !== undefined ? { cause: reason } : undefined);
  err.name = 'AbortError';
  return err;
}

/**
 * A generation the engine has no room for. `retryable`: the KV cache and its waiting queue
 * are full now (try again later); otherwise the request needs more KV cache than there is.
 */
export class CapacityError extends Error {
  override name = 'CapacityError';
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}
