#!/usr/bin/env perl
# Run Kaldi-style parallel jobs on Sun/Son of/Open Grid Engine, as one array job, and
# wait for them.
#
#   utils/queue.pl [--config conf/queue.conf] [--max-jobs-run N] [--mem 4G] \
#                  [--num-threads N] [--gpu N] [JOB=1:N] LOGFILE COMMAND...
#
# Same interface, JOB substitution, quoting, logs and exit status as utils/run.pl.
# It writes LOGDIR/q/NAME.sh (NAME: the log's file name without JOB), submits it once
# with `qsub -terse -t first:last [-tc N] -N NAME -o LOGDIR/q/NAME.$TASK_ID.out`, and
# waits: each task writes its exit code to a status file in LOGDIR/q/ after its log's
# footer, and those files decide success (no reliance on qacct). A task that leaves the
# queue (qstat -j no longer knows the job) without a status file counts as failed, once
# PYSPK_QUEUE_GRACE seconds (default 60: NFS caches file attributes) have passed.
#
# Options map onto qsub arguments through a Kaldi-style config (--config, else
# conf/queue.conf in the current directory, else the built-in one below); see
# utils/slurm.pl for the format. --max-jobs-run N becomes `-tc N`.
# INT/TERM/HUP to queue.pl delete the array job (qdel; also when they come during the
# submission) and wait until qstat -j no longer knows it before queue.pl exits, so that
# the stage lock held by its caller outlives every task (at most PYSPK_CANCEL_WAIT
# seconds, default 300, then a warning).
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . "/lib";
use QueueCommon;

my $builtin = <<'EOF';
command qsub -v PATH -cwd -S /bin/bash -j y
option mem=* -l mem_free=$0,ram_free=$0
option mem=0
option num_threads=* -pe smp $0
option num_threads=1
default gpu=0
option gpu=0
option gpu=* -l gpu=$0 -q g.q
EOF

my $p = QueueCommon::parse_args(@ARGV);
QueueCommon::submit_and_wait($p,
  builtin => $builtin,
  default_config => "conf/queue.conf",
  task_var => "SGE_TASK_ID",
  array_args => sub {
    my ($first, $last, $max_jobs, $name, $qdir) = @_;
    # $TASK_ID is expanded by SGE itself in the -o path (one output file per task).
    return ("-terse", "-t", "$first:$last", ($max_jobs ? ("-tc", $max_jobs) : ()),
            "-N", $name, "-o", "$qdir/$name.\$TASK_ID.out");
  },
  # -terse prints "jobid.first-last:step" for an array job.
  parse_id => sub { $_[0] =~ /^\s*(\d+)/ ? $1 : undef },
  # qstat -j exits non-zero ("Following jobs do not exist") once every task is done.
  alive => sub {
    my ($out, $rc) = QueueCommon::capture("qstat", "-j", $_[0]);
    return $rc == 0 ? 1 : ($out =~ /do not exist/i ? 0 : undef);
  },
  cancel => sub { ["qdel", $_[0]] },
);
