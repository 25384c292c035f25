-- The work list of every site (an administrator's) by urgency, without reading every open
-- visit (package followup, worklistByUrgencySQL). Urgency is the window against today:
-- overdue when it closed before today, due when today is inside it, upcoming when it opens
-- after today. With the window's end leading after the status, each urgency's first page is a
-- range of this index read in order with a LIMIT, and the counts by urgency are read from the
-- index alone (window_start rides along for due and upcoming).
CREATE INDEX followup_task_urgency ON followup_task (current_status, window_end, window_start);

-- The Tasks whose window that index cannot place: none of their own (a Task written without
-- restriction.period takes the plan's, from its infusion), or one that ends before it starts.
-- The scheduler writes neither, so this index stays near empty and costs its writes nothing.
CREATE INDEX followup_task_irregular_window ON followup_task (current_status)
    WHERE window_start IS NULL OR window_end IS NULL OR window_end < window_start;
