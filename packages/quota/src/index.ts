export {
  createProjectQuota,
  type ProjectQuota,
  type ProjectQuotaOptions,
  type QuotaProject,
  type QuotaReservation,
  type QuotaUsage,
  type QuotaWindow,
} from "./project-quota";
