// Writing safetensors files the way mergekit and Hugging Face lay them out: shards by a
// byte limit, their names, and headers (tensors by dtype alignment, then name; compact
// JSON padded with spaces to a multiple of 8 bytes).

export type OutputDtype = 'F32' | 'F16' | 'BF16';
type StoredDtype = OutputDtype | 'I32' | 'I16';

const DTYPE_BYTES: Record<StoredDtype, number> = { F32: 4, I32: 4, F16: 2, BF16: 2, I16: 2 };
// safetensors orders a file's tensors by dtype alignment, largest first, then by name (its
// dtype enum order: I16 < F16 < BF16 < I32 < F32).
const DTYPE_RANK: Record<StoredDtype, number> = { F32: 5, I32: 4, BF16: 3, F16: 2, I16: 1 };

export function tensorBytes(shape: number[], dtype: StoredDtype): number {
  return shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
}

/** Splits tensors (in write order) into shards: a new shard when the next tensor would
 * push the current one past the limit (a limit <= 0 means no limit). */
export function shardTensors(order: number[], sizes: number[], limit: number): number[][] {
  const shards: number[][] = [];
  let current: number[] = [];
  let bytes = 0;
  for (const i of order) {
    if (current.length > 0 && limit > 0 && bytes + sizes[i]! > limit) {
      shards.push(current);
      current = [];
      bytes = 0;
    }
    current.push(i);
    bytes += sizes[i]!;
  }
  if (current.length > 0) shards.push(current);
  return shards;
}

export function shardName(index: number, count: number): string {
  if (count === 1) return 'model.safetensors';
  const pad = (n: number) => String(n).padStart(5, '0');
  return `model-${pad(index + 1)}-of-${pad(count)}.safetensors`;
}

/** The header of a file holding these tensors, and the order their data follows
 * (indices into `tensors`). */
export function shardHeader(tensors: { name: string; dtype: StoredDtype; shape: number[] }[]): { header: Uint8Array; order: number[] } {
  const order = tensors.map((_, i) => i).sort((a, b) => {
    const x = tensors[a]!, y = tensors[b]!;
    return DTYPE_RANK[y.dtype] - DTYPE_RANK[x.dtype] || (x.name < y.name ? -1 : x.name > y.name ? 1 : 0);
  });
  let json = '{"__metadata__":{"format":"pt"}';
  let offset = 0;
  for (const i of order) {
    const t = tensors[i]!;
    const end = offset + tensorBytes(t.shape, t.dtype);
    json += `,${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${end}]}`;
    offset = end;
  }
  json += '}';
  const text = Buffer.from(json, 'utf8');
  const padded = Math.ceil(text.length / 8) * 8;
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  text.copy(header, 8);
  return { header, order };
}
