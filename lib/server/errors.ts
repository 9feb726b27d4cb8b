// Errors as OpenAI's API reports them: a status and { error: { message, type, param, code } }.
import { GrammarError } from '../constrain/errors.js';
import { RegexError } from '../constrain/regex.js';
import { SchemaError } from '../constrain/schema.js';
import { CapacityError } from '../errors.js';
import { ChatTemplateError } from '../tokenizer/chat-template.js';

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Seconds for a Retry-After header. */
    readonly retryAfter?: number,
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null): ApiError =>
  new ApiError(400, message, 'invalid_request_error', param, code);

/** What a failed generation means to the client. Errors the request itself caused (the
 * library's RangeErrors for bad settings, a chat template refusing the conversation) are
 * 400; a full cache is 429; anything else (TypeErrors included) is 500. */
export function apiErrorOf(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  const err = e instanceof Error ? e : new Error(String(e));
  if (err instanceof CapacityError)
    return err.retryable
      ? new ApiError(429, `the server is busy: ${err.message}`, 'rate_limit_error', null, 'rate_limit_exceeded', 1)
      : badRequest(err.message, null, 'context_length_exceeded');
  if (err instanceof RangeError || err instanceof ChatTemplateError || err instanceof SchemaError || err instanceof GrammarError || err instanceof RegexError) return badRequest(err.message);
  if (err.message === 'the model has been disposed') return new ApiError(503, 'the server is shutting down', 'server_error', null, 'server_shutting_down');
  return new ApiError(500, `internal error: ${err.message}`, 'server_error');
}
