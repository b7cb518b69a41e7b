export {
  createProjectQuota,
  type ProjectQuota,
  type QuotaProject,
  type QuotaReservation,
  type QuotaUsage,
  type QuotaWindow,
} from "./project-quota";
