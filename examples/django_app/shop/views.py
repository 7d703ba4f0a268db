from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .models import AuditEntry, Order


@csrf_exempt
def orders(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        data = json.loads(request.body)
        order = Order.objects.create(customer=data["customer"], amount=int(data["amount"]))
        return JsonResponse({"id": order.id, "customer": order.customer}, status=201)
    return JsonResponse(list(Order.objects.values()), safe=False)


def audit(request: HttpRequest) -> HttpResponse:
    entries = AuditEntry.objects.order_by("change_id").values("change_id", "op", "order_id")
    return JsonResponse(list(entries), safe=False)
