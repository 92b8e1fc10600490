"""Every day at 09:00 UTC: a cron step. It fires once per tick, however many workers run."""

from stepline import Context

config = {
    "type": "cron",
    "name": "DailySummary",
    "description": "Logs how many greetings were made so far",
    "cron": "0 9 * * *",
    "timezone": "UTC",
    "flows": ["hello"],
}


async def handler(ctx: Context) -> None:
    total = await ctx.state.get("stats", "greetings") or 0
    ctx.logger.info("daily summary", {"greetings": total})
