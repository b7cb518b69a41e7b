export { createReturnPaths, type ReturnPathReading, type ReturnPaths, verpLocalPrefix } from "./return-path";
