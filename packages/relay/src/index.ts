export { type ParsedUpstreamUrl, parseUpstreamUrl, type Upstream, UpstreamUrlError } from "./upstream";
