# What a researcher's R makes of the analysis file: Kaplan-Meier of OS, PFS and DOR from
# cohort.csv (the server's export of a fixed synthetic cohort, see TestAnalysisFileAgreesWithR),
# written to r_km.csv, which the Go test compares with the server's own survival report.
# Run by `make fixtures` from the repository root, after the export is refreshed.
suppressPackageStartupMessages(library(survival))
dir <- "registry/testdata/analysis"
d <- read.csv(file.path(dir, "cohort.csv"), na.strings = "")
num <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))
rows <- list()
for (ep in list(c("os", "os_days", "os_event"), c("pfs", "pfs_days", "pfs_event"), c("dor", "dor_days", "dor_event"))) {
  x <- d[!is.na(d[[ep[2]]]), ]
  fit <- survfit(Surv(x[[ep[2]]], x[[ep[3]]]) ~ 1, conf.type = "log-log")
  tab <- summary(fit)$table
  s <- summary(fit, times = c(365, 730, 1825), extend = TRUE)
  surv <- ifelse(c(365, 730, 1825) > max(x[[ep[2]]]), NA, s$surv)
  rows[[ep[1]]] <- data.frame(endpoint = ep[1], n = num(tab[["n.max"]]), events = num(tab[["events"]]),
                              median = num(tab[["median"]]), s365 = num(surv[1]), s730 = num(surv[2]), s1825 = num(surv[3]))
}
con <- file(file.path(dir, "r_km.csv"), "w")
writeLines(sprintf("# produced by %s, survival %s, with: Rscript registry/testdata/analysis/analyse.R",
                   R.version.string, packageDescription("survival")$Version), con)
write.table(do.call(rbind, rows), con, sep = ",", quote = FALSE, row.names = FALSE)
close(con)
