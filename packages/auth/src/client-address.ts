import ipaddr from "ipaddr.js";

/**
 * The client an AUTH limit counts: an IPv4 address as is (also when it arrives IPv4-mapped,
 * `::ffff:192.0.2.1`), an IPv6 address as its /64 prefix (`2001:db8:1:2::/64`). One IPv6
 * subscriber usually holds a whole /64 (RFC 6177), so counting single IPv6 addresses would give
 * it 2^64 fresh allowances. Anything unparseable is counted as the text it is.
 */
export function clientAddress(ip: string): string {
  if (!ipaddr.isValid(ip)) return ip;
  const parsed = ipaddr.process(ip);
  if (parsed.kind() === "ipv4") return parsed.toString();
  const parts = (parsed as ipaddr.IPv6).parts;
  const prefix = new ipaddr.IPv6([parts[0] ?? 0, parts[1] ?? 0, parts[2] ?? 0, parts[3] ?? 0, 0, 0, 0, 0]);
  return `${prefix.toString()}/64`;
}
