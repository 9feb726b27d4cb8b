// Errors of constrained decoding: a grammar, regex or schema that cannot be used.
export class GrammarError extends Error {
  override name = 'GrammarError';
}
