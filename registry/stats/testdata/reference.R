# Expected values for registry/stats, computed by R's survival package.
#
# Reads the cohorts written by gencohorts/main.go (cohorts/*.csv, wilson_cases.csv) and writes
# what R says about them into r/. The Go tests compare against these files only, so running
# the tests never needs R. Regenerate with `make fixtures` from the repository root, or
#   Rscript registry/stats/testdata/reference.R
#
# Every number is written with sprintf("%.17g"), so it round-trips to the same double; R's NA
# is written as NA, NaN as NaN and infinities as Inf / -Inf.

suppressPackageStartupMessages(library(survival))
suppressPackageStartupMessages(library(cmprsk))

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
dir <- if (length(script) == 1) dirname(normalizePath(script)) else "registry/stats/testdata"
# Refuse a directory that is not this one (a relative default taken from another working
# directory), rather than writing header-only results into a new tree the tests never read.
if (!file.exists(file.path(dir, "reference.R")) ||
    length(list.files(file.path(dir, "cohorts"), pattern = "\\.csv$")) == 0)
  stop("no cohorts beside reference.R in ", normalizePath(dir, mustWork = FALSE),
       ": run from the repository root, after gencohorts (make fixtures does both)", call. = FALSE)
out <- file.path(dir, "r")
dir.create(file.path(out, "curves"), recursive = TRUE, showWarnings = FALSE)
dir.create(file.path(out, "landmarks"), recursive = TRUE, showWarnings = FALSE)

header <- sprintf("# produced by %s, survival %s, cmprsk %s, on %s, with: Rscript registry/stats/testdata/reference.R",
                  R.version.string, packageDescription("survival")$Version,
                  packageDescription("cmprsk")$Version, format(Sys.Date()))

num <- function(x) ifelse(is.na(x) & !is.nan(x), "NA", sprintf("%.17g", x))

write_table <- function(df, path) {
  con <- file(path, "w")
  writeLines(header, con)
  write.table(df, con, sep = ",", quote = FALSE, row.names = FALSE, col.names = TRUE)
  close(con)
}

# fmt turns every double column into full-precision text; integer-valued count columns
# are written the same way (they print as integers).
fmt <- function(df) {
  for (i in seq_along(df)) if (is.numeric(df[[i]])) df[[i]] <- num(df[[i]])
  df
}

probs <- c(0.1, 0.25, 0.5, 0.75, 0.9)
quantiles <- list()
medians <- list()

# Each cohort is fitted as it is (the outcome curve, "km") and reversed (censoring as the
# event: the follow-up curve, "reverse"), at the 95% level; two cohorts also at 90%.
fits <- function(name) {
  specs <- list(list(fit = "km95", reverse = FALSE, level = 0.95),
                list(fit = "reverse95", reverse = TRUE, level = 0.95))
  if (name %in% c("tiny10", "cart500"))
    specs <- c(specs, list(list(fit = "km90", reverse = FALSE, level = 0.90)))
  specs
}

files <- sort(list.files(file.path(dir, "cohorts"), pattern = "\\.csv$", full.names = TRUE))
for (f in files) {
  name <- sub("\\.csv$", "", basename(f))
  d <- read.csv(f)
  for (s in fits(name)) {
    status <- if (s$reverse) 1 - d$status else d$status
    fit <- survfit(Surv(d$time, status) ~ 1, conf.type = "log-log", conf.int = s$level)
    id <- paste(name, s$fit, sep = ".")

    # The whole curve, censoring times included: summary(fit, censored = TRUE) has the same
    # rows; its std.err (of S) is fit$std.err (of -log S, Greenwood) times surv.
    sm <- summary(fit, censored = TRUE)
    write_table(fmt(data.frame(time = fit$time, n.risk = fit$n.risk, n.event = fit$n.event,
                               n.censor = fit$n.censor, surv = fit$surv,
                               std.err = sm$std.err, logse = fit$std.err,
                               lower = fit$lower, upper = fit$upper)),
                file.path(out, "curves", paste0(id, ".csv")))

    # Landmarks: the registry's 1, 2 and 5 years, plus times that probe the step function's
    # edges (0, before the first time, exactly on and just after steps, past the end).
    ut <- sort(unique(d$time))
    pick <- ut[unique(round(seq(1, length(ut), length.out = min(6, length(ut)))))]
    times <- sort(unique(c(0, 0.5, 365, 730, 1825, min(d$time) / 2, pick, pick + 0.5,
                           max(d$time) + 100)))
    lm <- summary(fit, times = times, extend = TRUE)
    write_table(fmt(data.frame(time = lm$time, n.risk = lm$n.risk, n.event = lm$n.event,
                               n.censor = lm$n.censor, surv = lm$surv, std.err = lm$std.err,
                               lower = lm$lower, upper = lm$upper)),
                file.path(out, "landmarks", paste0(id, ".csv")))

    q <- quantile(fit, probs = probs)
    quantiles[[id]] <- data.frame(cohort = name, fit = s$fit, p = probs, quantile = unname(q$quantile),
                                  lower = unname(q$lower), upper = unname(q$upper))
    tab <- summary(fit)$table
    lv <- format(s$level)
    medians[[id]] <- data.frame(cohort = name, fit = s$fit, level = sprintf("%g", s$level),
                                n = unname(tab["n.max"]), events = unname(tab["events"]),
                                median = unname(tab["median"]),
                                lower = unname(tab[paste0(lv, "LCL")]),
                                upper = unname(tab[paste0(lv, "UCL")]))
  }
}
write_table(fmt(do.call(rbind, quantiles)), file.path(out, "quantiles.csv"))
write_table(fmt(do.call(rbind, medians)), file.path(out, "medians.csv"))

# Wilson score interval without continuity correction: prop.test(correct = FALSE).
w <- read.csv(file.path(dir, "wilson_cases.csv"))
rows <- list()
for (level in c(0.95, 0.90, 0.99)) {
  for (i in seq_len(nrow(w))) {
    # prop.test warns that the chi-squared approximation may be poor for small counts; the
    # interval itself is exact arithmetic on the Wilson formula, so the warning is noise here.
    ci <- suppressWarnings(prop.test(w$x[i], w$n[i], correct = FALSE, conf.level = level))$conf.int
    rows[[length(rows) + 1]] <- data.frame(x = w$x[i], n = w$n[i], level = sprintf("%g", level),
                                           lower = ci[1], upper = ci[2])
  }
}
write_table(fmt(do.call(rbind, rows)), file.path(out, "wilson.csv"))

# Competing risks: cumulative incidence of each cause by cmprsk::cuminc (Aalen-Johansen
# estimate, Gray's variance), read at chosen times with timepoints(), and the pointwise
# log(-log) interval est^exp(+-z sqrt(var) / (est log est)); and the log-rank test of any event
# across groups by survival::survdiff.
dir.create(file.path(out, "competing"), showWarnings = FALSE)
z <- qnorm(0.975)
logrank <- list()
logrank_groups <- list()
for (f in sort(list.files(file.path(dir, "competing"), pattern = "\\.csv$", full.names = TRUE))) {
  name <- sub("\\.csv$", "", basename(f))
  d <- read.csv(f, colClasses = c("numeric", "integer", "character"))
  ci <- cuminc(d$time, d$cause, cencode = 0)
  ut <- sort(unique(d$time))
  times <- sort(unique(c(ut, ut[-1] - 0.5, min(ut) / 2)))
  tp <- timepoints(ci[names(ci) != "Tests"], times)
  rows <- list()
  for (cause in 1:2) {
    key <- paste("1", cause)
    est <- tp$est[key, ]
    v <- tp$var[key, ]
    sd <- z * sqrt(v) / (est * log(est))
    ok <- est > 0 & est < 1
    rows[[cause]] <- data.frame(cause = cause, time = times, est = est, var = v,
                                lower = ifelse(ok, est^exp(-sd), NA), upper = ifelse(ok, est^exp(sd), NA))
  }
  write_table(fmt(do.call(rbind, rows)), file.path(out, "competing", paste0(name, ".csv")))

  sdiff <- survdiff(Surv(time, cause > 0) ~ group, data = d)
  df <- sum(sdiff$exp > 0) - 1
  logrank[[name]] <- data.frame(cohort = name, chisq = sdiff$chisq, df = df,
                                p = pchisq(sdiff$chisq, df, lower.tail = FALSE))
  logrank_groups[[name]] <- data.frame(cohort = name, group = sub("^group=", "", names(sdiff$n)),
                                       obs = sdiff$obs, exp = sdiff$exp)
}
write_table(fmt(do.call(rbind, logrank)), file.path(out, "logrank.csv"))
write_table(fmt(do.call(rbind, logrank_groups)), file.path(out, "logrank_groups.csv"))
